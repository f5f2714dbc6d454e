"""Engine for any OpenAI-compatible server (`/v1/chat/completions`): vLLM, TGI, llama.cpp, OpenAI.

Requests run concurrently in a thread pool (bounded by `concurrency`) because
servers batch what arrives together. Rate limits, 5xx and dropped connections
are retried with exponential backoff and jitter; any other 4xx is a mistake
(wrong model name, bad key) and fails at once, except a prompt the server finds
too long: that one request is refused alone (`PromptRejected`), the others finish.

The context guard asks the server for its context (`max_model_len` in
`/v1/models`, as vLLM reports it) and counts prompt tokens with vLLM's
`/tokenize`; servers without them leave the guard to that 400 answer.

The HTTP client is `httpx2` (what huggingface_hub depends on, so it is
always installed), falling back to `httpx`, whose API it keeps.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime

from cai.engines.base import Completion, Conversation, Engine, EngineInfo, LabelRead, PromptRejected, SamplingParams
from cai.errors import CaiError

try:
    import httpx2 as httpx
except ImportError:                 # pragma: no cover - older environments
    import httpx

_MAX_DELAY = 60.0
# A 4xx whose message says the prompt does not fit: that prompt alone is refused.
_TOO_LONG = re.compile(r"context|too long|too large|maximum .*tokens", re.IGNORECASE)


class _TooLong(CaiError):
    """The server refused one request because its prompt does not fit."""


class OpenAIEngine(Engine):
    """Sends each conversation as one chat-completions request; `base_url` ends in `/v1`."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff: float = 0.5,
    ):
        self.model = model
        self.model_path = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = max(1, concurrency)
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.backoff = backoff       # first retry waits about this long, then doubles
        self._client = None
        self._stop = threading.Event()
        self._context: int | None = None
        self._asked_context = False
        self._can_count = True                  # until /tokenize fails once

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def load(self) -> None:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.api_key}"},
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )

    @property
    def _root(self) -> str:
        """The server's root: vLLM serves /tokenize beside /v1, not under it."""
        return self.base_url.removesuffix("/v1")

    def context_length(self) -> int | None:
        """`max_model_len` of this model in the server's /v1/models (vLLM reports it); None when absent."""
        if not self._asked_context:
            self._asked_context = True
            if self._client is None:
                self.load()
            try:
                listing = self._client.get(f"{self.base_url}/models").json()
                entry = next(m for m in listing.get("data", []) if m.get("id") == self.model)
                self._context = int(entry["max_model_len"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
                pass
        return self._context

    def count_tokens(self, conversations: list[Conversation]) -> list[int] | None:
        """Prompt tokens from the server's /tokenize (vLLM), which applies the chat template; None without it."""
        if self.context_length() is None or not self._can_count:
            return None
        counts = []
        for conversation in conversations:
            try:
                response = self._client.post(f"{self._root}/tokenize", json={
                    "model": self.model, "messages": conversation, "add_generation_prompt": True})
                counts.append(int(response.json()["count"]))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                self._can_count = False
                return None
        return counts

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        return self._run_concurrently(lambda conversation: self._complete(conversation, params), conversations)

    def _run_concurrently(self, request, items: list) -> list:
        """`request(item)` for every item, up to `concurrency` in flight, results in input order.

        The first failure in input order stops the others' retries and is raised; a prompt the server
        finds too long fails alone: the rest finish and `PromptRejected` names the refused ones.
        """
        if self._client is None:
            self.load()
        if not items:
            return []
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="cai-openai")
        try:
            futures = [pool.submit(request, item) for item in items]
            pending, finished = set(futures), set()
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                finished |= done
                for future in futures:           # the first failure, in input order, is the one reported
                    error = future.exception() if future in finished else None
                    if error is not None and not isinstance(error, _TooLong):
                        self._stop.set()         # retries in other threads give up instead of sleeping
                        raise error
            refused = {i: str(f.exception()) for i, f in enumerate(futures) if f.exception() is not None}
            if refused:
                raise PromptRejected(refused)
            return [f.result() for f in futures]
        finally:
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
        """POST with retries; returns the decoded JSON of the first 2xx answer."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise CaiError(f"{self.url}: cancelled after another request failed")
            wait_for = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                last = f"{type(exc).__name__}: {_one_line(str(exc)) or 'no detail'}"
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise CaiError(f"{self.url}: HTTP {status} with a body that is not JSON: "
                                       f"{_one_line(response.text)[:200]}") from exc
                last = f"HTTP {status}: {_server_message(response)}"
                if status in (400, 413, 422) and _TOO_LONG.search(last):
                    raise _TooLong(last)
                if status != 429 and status < 500:
                    raise CaiError(f"{self.url}: {last}")
                wait_for = _retry_after(response.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            if wait_for is None:
                wait_for = self.backoff * 2**attempt * random.uniform(0.5, 1.5)
            if self._stop.wait(min(wait_for, _MAX_DELAY)):
                raise CaiError(f"{self.url}: cancelled after another request failed")
        raise CaiError(f"{self.url}: failed after {self.max_retries + 1} attempts: {last}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model, {"base_url": self.base_url, "concurrency": self.concurrency,
                                                  "dtype": "chosen by the server", "context": self._context})

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
                return LabelRead(error=str(err).removeprefix(f"{self.url}: "))
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
            self._stop.clear()
            ids = self._label_token_ids(labels) if self.label_exact_ids else None
            exact = server_labels.LabelMode(ids=ids) if ids else None
            if exact is not None and self._probe(exact, labels) is None:
                modes[key] = exact
            else:
                top = server_labels.LabelMode()
                problem = self._probe(top, labels)
                if problem is not None:
                    raise CaiError(f"{self.base_url} (model {self.model}) returns no log-probabilities: asked "
                                   f"/chat/completions for logprobs with top_logprobs {top.top_n}, {problem}; the "
                                   "judge reads its verdict from them: use a server that returns them (vLLM, SGLang, "
                                   "llama.cpp's server) or a local judge (--judge-engine transformers or vllm)")
                modes[key] = top
        return modes[key]

    def _probe(self, mode, labels: list[str]) -> str | None:
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
            return f"it answered {str(err).removeprefix(f'{self.url}: ')}"
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
                    response = self._client.post(f"{self._root}/tokenize", json={
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
