"""Engine for OpenAI-compatible servers (`/v1/chat/completions`): vLLM, TGI, llama.cpp, OpenAI; one or many.

Servers batch what arrives together, so requests run concurrently in threads,
as many as the servers take: `cai.engines.server_pool` sends each to the least
busy server that is up, under that server's limit (adaptive unless
`concurrency` fixes it), takes out a server that stops answering and puts it
back when it answers again. `preferred_batch()` tells the generation job how
many prompts keep them full, and `independent_requests` lets the loop send
each prompt's next stage as soon as its reply is back; waiting requests get
slots first come first served, so the prompts of a batch finish together.

Rate limits, 5xx and timeouts are retried with exponential backoff and jitter;
a dropped connection is retried at once on another server when one is up. Any
other 4xx is a mistake (wrong model name, bad key) and fails at once, except a
prompt the server finds too long: that one request is refused alone
(`PromptRejected`), the others finish.

The context guard asks the servers for their context (`max_model_len` in
`/v1/models`, as vLLM reports it; the smallest when they differ) and counts
prompt tokens with vLLM's `/tokenize`; servers without them leave the guard
to that 400 answer.

The HTTP client is `httpx2` (what huggingface_hub depends on, so it is
always installed), falling back to `httpx`, whose API it keeps.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime

from cai.engines.base import Completion, Conversation, Engine, EngineInfo, LabelRead, PromptRejected, SamplingParams
from cai.engines.server_pool import Cancelled, Server, ServerPool, parse_base_urls
from cai.errors import CaiError

try:
    import httpx2 as httpx
except ImportError:                 # pragma: no cover - older environments
    import httpx

_log = logging.getLogger("cai.engines.openai")
_CHAT = "/chat/completions"
_MAX_DELAY = 60.0
_CONNECT_TIMEOUT = 10.0             # a server that does not take a connection in this long is gone
_PROBE_TIMEOUT = 5.0                # /v1/models answers at once on a live server
_MAX_THREADS = 1024                 # requests of one call in flight (or waiting for a slot) at most
_TOKENIZE_THREADS = 16
_OTHER_MODEL = "does not serve model"
_BATCH_ROUNDS = 4                   # prompts a batch holds, in multiples of the requests the servers take at once
# A 4xx whose message says the prompt does not fit: that prompt alone is refused.
_TOO_LONG = re.compile(r"context|too long|too large|maximum .*tokens", re.IGNORECASE)


class _TooLong(CaiError):
    """The server refused one request because its prompt does not fit."""


class OpenAIEngine(Engine):
    """Sends each conversation as one chat-completions request to the least busy server; URLs end in `/v1`."""

    name = "openai"
    independent_requests = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | list[str],
        api_key: str | None = None,
        concurrency: int | None = None,
        max_retries: int = 5,
        timeout: float = 600.0,
        backoff: float = 0.5,
        probe_every: float = 2.0,
    ):
        self.model = model
        self.model_path = model
        self.base_urls = parse_base_urls(base_url)
        if not self.base_urls:
            raise CaiError("--base-url: needed with --engine openai, e.g. http://127.0.0.1:8000/v1")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = None if concurrency is None else max(1, concurrency)   # None: adaptive, per server
        self.max_retries = max(0, max_retries)
        self.timeout = timeout       # a generation request may wait this long for its answer
        self.backoff = backoff       # first retry waits about this long, then doubles
        self.probe_every = probe_every
        self._client = None
        self._pool: ServerPool | None = None
        self._call = threading.local()          # the stop event of the _run_concurrently call a thread serves
        self._can_count = True                  # until /tokenize answers other than 200 once

    @property
    def url(self) -> str:
        return f"{self.base_urls[0]}{_CHAT}"

    def load(self) -> None:
        if self._client is not None:
            return
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=_CONNECT_TIMEOUT),
            headers={"Authorization": f"Bearer {self.api_key}"},
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=_MAX_THREADS),
        )
        self._pool = ServerPool(self.base_urls, concurrency=self.concurrency, probe=self._probe,
                                probe_every=self.probe_every, on_change=_log.warning)
        down = self._pool.check_all()
        wrong = next((f"{url} {why}" for url, why in down.items() if why.startswith(_OTHER_MODEL)), None)
        if wrong or len(down) == len(self.base_urls):
            self.close()
            raise CaiError(wrong or "no server answers: " + "; ".join(f"{url} ({why})" for url, why in down.items()))
        self._pool.start()

    def _probe(self, server: Server) -> str | None:
        """None when the server answers /v1/models (what it says is kept), else why not."""
        try:
            response = self._client.get(f"{server.url}/models", timeout=_PROBE_TIMEOUT)
        except httpx.TransportError as exc:
            return _transport_reason(exc)
        if response.status_code >= 500 and response.status_code != 501:     # 501: up, without /v1/models
            return f"HTTP {response.status_code}: {_server_message(response)}"
        try:
            listing = [m for m in response.json().get("data", []) if isinstance(m, dict)]
        except (ValueError, AttributeError, TypeError):
            return None                                  # it answers; it just lists no models
        served = server.info["models"] = [m.get("id") for m in listing]
        if served and self.model not in served:           # up, but not for this run: stays out
            listed = ", ".join(map(repr, served))
            return f"{_OTHER_MODEL} {self.model!r} (it serves {listed}): give --model one of those"
        entry = next((m for m in listing if m.get("id") == self.model), {})
        if isinstance(entry.get("max_model_len"), int):
            server.info["max_model_len"] = entry["max_model_len"]
        return None

    def context_length(self) -> int | None:
        """The smallest `max_model_len` the servers report for this model in /v1/models (vLLM does); None without."""
        if self._pool is None:
            self.load()
        lengths = [s.info["max_model_len"] for s in self._pool.servers if "max_model_len" in s.info]
        return min(lengths) if lengths else None

    def count_tokens(self, conversations: list[Conversation]) -> list[int] | None:
        """Prompt tokens from a server's /tokenize (vLLM), which applies the chat template; None without it."""
        if self.context_length() is None or not self._can_count:
            return None
        if not conversations:
            return []
        workers = min(len(conversations), _TOKENIZE_THREADS)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cai-tokenize") as pool:
            counts = list(pool.map(self._tokenize, conversations))
        return None if None in counts else counts

    def _tokenize(self, conversation: Conversation) -> int | None:
        """One conversation's count; a server that does not answer is taken out and the next one asked."""
        body = {"model": self.model, "messages": conversation, "add_generation_prompt": True}
        for _ in range(len(self.base_urls)):
            server = self._pool.least_busy()
            try:
                response = self._client.post(f"{server.root}/tokenize", json=body, timeout=_PROBE_TIMEOUT * 6)
            except httpx.TransportError as exc:
                self._pool.take_out(server, _transport_reason(exc))
                continue
            if response.status_code >= 500:
                continue
            try:
                return int(response.json()["count"])
            except (ValueError, KeyError, TypeError):
                self._can_count = False                  # not vLLM: the servers' own 400 guards the context
                return None
        return None

    def preferred_batch(self) -> int | None:
        """Four times what the servers take at once: a stage keeps them full until its last quarter drains."""
        return _BATCH_ROUNDS * self._pool.total_limit() if self._pool is not None else None

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        return self._run_concurrently(lambda conversation: self._complete(conversation, params), conversations)

    def _run_concurrently(self, request, items: list) -> list:
        """`request(item)` for every item, as many in flight as the servers take, results in input order.

        The first failure in input order stops the others' retries and is raised; a prompt the server
        finds too long fails alone: the rest finish and `PromptRejected` names the refused ones.
        """
        if self._client is None:
            self.load()
        if not items:
            return []
        stop = threading.Event()                 # this call's: another call's failure does not cancel it

        def run(item):
            self._call.stop = stop
            return request(item)

        if len(items) == 1:                      # one request (the loop sends one per prompt): no thread of its own
            outer, self._call.stop = getattr(self._call, "stop", None), stop
            try:
                return [request(items[0])]
            except _TooLong as refused:
                raise PromptRejected({0: str(refused)}) from None
            finally:
                self._call.stop = outer
        pool = ThreadPoolExecutor(max_workers=min(len(items), _MAX_THREADS), thread_name_prefix="cai-openai")
        try:
            futures = [pool.submit(run, item) for item in items]
            pending, finished = set(futures), set()
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                finished |= done
                for future in futures:           # the first failure, in input order, is the one reported
                    error = future.exception() if future in finished else None
                    if error is not None and not isinstance(error, _TooLong):
                        stop.set()               # retries in other threads give up instead of sleeping
                        raise error
            refused = {i: str(f.exception()) for i, f in enumerate(futures) if f.exception() is not None}
            if refused:
                raise PromptRejected(refused)
            return [f.result() for f in futures]
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, conversation: Conversation, params: SamplingParams) -> Completion:
        body = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "n": 1,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        data = self._post(body)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(
                text=choice["message"].get("content") or "",
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise CaiError(f"{self.url}: unexpected response (no choices[0].message): {str(data)[:200]}") from exc

    def _post(self, body: dict) -> dict:
        """POST to the chat endpoint of the least busy server, with retries; the decoded JSON of the first 2xx.

        A server that drops the connection is taken out and the request tried at once on another; 429, 503,
        a timeout and other 5xx answers are tried again after a backoff (429/503/timeouts lower that
        server's limit). Any other 4xx is a mistake in the request: raised at once.
        """
        if self._client is None:
            self.load()
        stop = getattr(self._call, "stop", None) or threading.Event()
        last, url, tried, ticket = "", self.url, set(), self._pool.ticket()
        for attempt in range(self.max_retries + 1):
            try:
                server = self._pool.acquire(stop, avoid=tried, ticket=ticket)
            except Cancelled:
                raise CaiError(f"{url}: cancelled after another request failed") from None
            url = f"{server.url}{_CHAT}"
            data, last, wait_for = self._attempt(server, url, body)
            if data is not None:
                return data
            tried.add(server.url)
            if attempt == self.max_retries:
                break
            if wait_for is None:
                moved = not server.up and self._pool.others_up(server)
                wait_for = 0.0 if moved else self.backoff * 2**attempt * random.uniform(0.5, 1.5)
            if stop.wait(min(wait_for, _MAX_DELAY)):
                raise CaiError(f"{url}: cancelled after another request failed")
        raise CaiError(f"{url}: failed after {self.max_retries + 1} attempts: {last}")

    def _attempt(self, server: Server, url: str, body: dict) -> tuple[dict | None, str, float | None]:
        """One try on `server`, whose slot it gives back: (JSON, "", None) or (None, what failed, Retry-After)."""
        started, sent_in = time.monotonic(), server.limiter.generation
        try:
            response = self._client.post(url, json=body)
        except httpx.ConnectTimeout as exc:          # no answer to connect: the host is gone
            self._pool.failed(server, _transport_reason(exc), at_once=True)
            return None, _transport_reason(exc), None
        except httpx.TimeoutException as exc:        # slow, not gone: fewer requests in flight there
            self._pool.overloaded(server)
            return None, _transport_reason(exc), None
        except httpx.TransportError as exc:          # refused, reset, closed mid-answer: the server is gone
            self._pool.failed(server, _transport_reason(exc), at_once=True)
            return None, _transport_reason(exc), None
        except BaseException:
            self._pool.release(server)
            raise
        status = response.status_code
        if status < 300:
            try:
                data = response.json()
            except ValueError as exc:
                self._pool.release(server)
                raise CaiError(f"{url}: HTTP {status} with a body that is not JSON: "
                               f"{_one_line(response.text)[:200]}") from exc
            self._pool.done(server, _completion_tokens(data), time.monotonic() - started, sent_in)
            return data, "", None
        last = f"HTTP {status}: {_server_message(response)}"
        if status in (429, 503):
            self._pool.overloaded(server)
            return None, last, _retry_after(response.headers.get("retry-after"))
        if status >= 500:
            self._pool.failed(server, last, at_once=False)
            return None, last, None
        self._pool.release(server)
        if status in (400, 413, 422) and _TOO_LONG.search(last):
            raise _TooLong(last)
        raise CaiError(f"{url}: {last}")

    def close(self) -> None:
        """Stop probing and close the connections; the pool stays readable for info()."""
        if self._pool is not None:
            self._pool.close()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def info(self) -> EngineInfo:
        """The servers, each with its requests and its limit (now and its range over the run), and the context."""
        loaded = self._pool is not None
        return EngineInfo(self.name, self.model, {
            "base_url": self.base_urls[0] if len(self.base_urls) == 1 else self.base_urls,
            "concurrency": self._pool.summary() if loaded else None, "dtype": "chosen by the server",
            "context": self.context_length() if loaded else None})

    # --- label log-probabilities (AI feedback) -------------------------------------------------

    # False reads `top_logprobs` even from a server that takes exact token ids (to compare the two readings).
    label_exact_ids = True

    def label_logprobs(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        reads = self.label_reads(conversations, labels)
        for i, read in enumerate(reads):
            if read.error is not None:
                raise CaiError(f"{self.url}: conversation {i}: {read.error}")
        return [list(read.logprobs) for read in reads]

    def label_reads(self, conversations: list[Conversation], labels: list[str], on_result=None) -> list[LabelRead]:
        """One `max_tokens: 1` request per conversation, concurrently; `on_result(i, read)` as each completes.

        A conversation the server fails on (after the retries) fails alone, with the reason in its read;
        when every one fails the server is at fault, and the first failure is raised.
        """
        from cai.engines import server_labels

        mode = self.label_mode(labels)

        def request(item: tuple[int, Conversation]) -> LabelRead:
            i, conversation = item
            try:
                data = self._post(server_labels.body(self.model, conversation, mode))
            except CaiError as err:
                return LabelRead(error=_reason(err))
            read = (server_labels.read_exact(data, labels, mode.ids) if mode.exact
                    else server_labels.read_top(data, labels))
            if on_result is not None and read.error is None:
                on_result(i, read)
            return read

        reads = self._run_concurrently(request, list(enumerate(conversations)))
        if reads and all(read.error is not None for read in reads):
            raise CaiError(f"{self.url}: {reads[0].error}")
        return reads

    def label_mode(self, labels: list[str]):
        """How this server gives the labels' log-probabilities, asked once per label set before any is judged:
        exact token ids where it takes `logprob_token_ids` (vLLM), else its `top_logprobs`; a server that
        returns neither is one CaiError line naming it."""
        from cai.engines import server_labels

        modes = self.__dict__.setdefault("_label_modes", {})
        key = tuple(labels)
        if key not in modes:
            if self._client is None:
                self.load()
            ids = self._label_token_ids(labels) if self.label_exact_ids else None
            exact = server_labels.LabelMode(ids=ids) if ids else None
            if exact is not None and self._probe_labels(exact, labels) is None:
                modes[key] = exact
            else:
                top = server_labels.LabelMode()
                problem = self._probe_labels(top, labels)
                if problem is not None:
                    servers = ", ".join(self.base_urls)
                    raise CaiError(f"{servers} (model {self.model}) returns no log-probabilities: asked "
                                   f"/chat/completions for logprobs with top_logprobs {top.top_n}, {problem}; the "
                                   "judge reads its verdict from them: use a server that returns them (vLLM, SGLang, "
                                   "llama.cpp's server) or a local judge (--judge-engine transformers or vllm)")
                modes[key] = top
        return modes[key]

    def _probe_labels(self, mode, labels: list[str]) -> str | None:
        """None when the server answers `mode`'s request with the labels' log-probabilities, else what went wrong.

        A server that fails the top-N request for another reason than log-probabilities (down, unknown model,
        bad key) raises that error as generation would.
        """
        from cai.engines import server_labels

        try:
            data = self._post(server_labels.body(self.model, server_labels.PROBE, mode))
        except CaiError as err:
            if not mode.exact and "logprob" not in str(err).lower():
                raise
            return f"it answered {_reason(err)}"
        read = (server_labels.read_exact(data, labels, mode.ids) if mode.exact
                else server_labels.read_top(data, labels))
        return None if read.error is None else read.error.replace("the answer has", "the answer had")

    def _label_token_ids(self, labels: list[str]) -> tuple[tuple[int, ...], ...] | None:
        """The first token id of each label's variants ("A", " A") from the server's /tokenize; None without it."""
        from cai.engines.server_labels import variants

        out = []
        for label in labels:
            ids = set()
            for text in variants(label):
                try:
                    response = self._client.post(f"{self._pool.least_busy().root}/tokenize", json={
                        "model": self.model, "prompt": text, "add_special_tokens": False})
                    tokens = response.json()["tokens"] if response.status_code < 300 else None
                    if tokens:
                        ids.add(int(tokens[0]))
                except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError):
                    return None
                if not tokens:
                    return None
            out.append(tuple(sorted(ids)))
        return tuple(out)


def _completion_tokens(data) -> int:
    """Tokens the answer generated, for the limiter's throughput (1 when the server does not say)."""
    try:
        return max(1, int((data.get("usage") or {}).get("completion_tokens") or 1))
    except (AttributeError, TypeError, ValueError):
        return 1


def _transport_reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {_one_line(str(exc)) or 'no detail'}"


def _reason(err: CaiError) -> str:
    """A request's failure without the URL it was sent to (any server of the pool)."""
    return re.sub(r"^\S+/chat/completions: ", "", str(err))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(response) -> str:
    """The server's own explanation: OpenAI-style `error.message`, else the body's first line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return _one_line(str(error["message"]))[:500]
        if isinstance(error, str):
            return _one_line(error)[:500]
        if data.get("message"):
            return _one_line(str(data["message"]))[:500]
    return _one_line(response.text)[:500] or response.reason_phrase or "no message"


def _one_line(text: str) -> str:
    return " ".join(text.split())
