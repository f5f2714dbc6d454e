"""The OpenAI-compatible engine: retries against a scripted local server, then a real vLLM server.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.vllm_env import free_port
from support.vllm_server import openai_server

from cai.engines.base import PromptRejected, SamplingParams
from cai.engines.openai_server import OpenAIEngine
from cai.errors import CaiError
from cai.generation.context import ContextGuard

USER = [{"role": "user", "content": "hi"}]


# --- a scripted server: each request takes the next (status, headers, body) ---------------------

class Scripted:
    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self.lock = threading.Lock()

    def next(self, body):
        with self.lock:
            self.requests.append(body)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def ok(text, prompt=3, completion=2, finish="stop"):
    return 200, {}, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


@pytest.fixture
def scripted():
    """Start a local HTTP server answering from a script; yields (set_script, base_url)."""
    state = {"s": Scripted([ok("x")])}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, payload = state["s"].next(body)
            if callable(payload):
                payload = payload(body)
                if isinstance(payload, tuple):           # (status, payload): the callable picks the status
                    status, payload = payload
            data = json.dumps(payload).encode() if isinstance(payload, dict) else payload.encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def use(script):
        state["s"] = Scripted(script)
        return state["s"]

    yield use, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_retries_429_then_503_then_succeeds(scripted):
    use, url = scripted
    server = use([(429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}),
                  (503, {}, "overloaded"),
                  ok("fine", prompt=5, completion=1)])
    engine = OpenAIEngine("m", base_url=url, backoff=0.01)
    start = time.monotonic()
    [out] = engine.generate([USER], SamplingParams(max_new_tokens=4, seed=3))
    assert time.monotonic() - start >= 1.0                     # Retry-After was honoured
    assert (out.text, out.prompt_tokens, out.completion_tokens, out.finish_reason) == ("fine", 5, 1, "stop")
    assert len(server.requests) == 3
    sent = server.requests[-1]
    assert sent["seed"] == 3 and sent["max_tokens"] == 4 and sent["model"] == "m" and sent["messages"] == USER
    engine.close()


def test_client_error_fails_at_once_with_server_message(scripted):
    use, url = scripted
    server = use([(400, {}, {"error": {"message": "Unknown parameter: 'seed'.\nRemove it."}})])
    with OpenAIEngine("m", base_url=url, backoff=0.01) as engine, pytest.raises(CaiError) as err:
        engine.generate([USER], SamplingParams())
    message = str(err.value)
    assert "\n" not in message
    assert "HTTP 400" in message and "Unknown parameter: 'seed'. Remove it." in message
    assert len(server.requests) == 1


def test_a_prompt_too_long_for_the_server_is_refused_alone(scripted):
    """Without /v1/models' max_model_len the engine cannot count; the server's 400 refuses that prompt only."""
    use, url = scripted

    def answer(body):
        text = body["messages"][-1]["content"]
        if text.startswith("huge"):
            return 400, {"error": {"message": "This model's maximum context length is 512 tokens. However, you "
                                              "requested 9000 tokens."}}
        return 200, ok(text)[2]

    server = use([(200, {}, answer)])
    convs = [[{"role": "user", "content": t}] for t in ("a", "huge " * 100, "b", "huge again")]
    with OpenAIEngine("m", base_url=url, concurrency=2) as engine:
        assert engine.context_length() is None and engine.count_tokens(convs) is None
        with pytest.raises(PromptRejected) as refused:
            engine.generate(convs, SamplingParams())
        assert sorted(refused.value.reasons) == [1, 3]
        assert refused.value.reasons[1] == ("HTTP 400: This model's maximum context length is 512 tokens. "
                                            "However, you requested 9000 tokens.")
        assert len(server.requests) == 4                 # the good ones were not cancelled
        assert [c.text for c in engine.generate([convs[0], convs[2]], SamplingParams())] == ["a", "b"]


def test_generate_records_the_refused_prompt_and_finishes_the_others(scripted, tmp_path):
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run
    from cai.generation.store import RunStore

    use, url = scripted
    use([(200, {}, lambda body: (400, {"error": {"message": "prompt is too long"}})
          if "HUGE" in json.dumps(body["messages"]) else (200, ok("fine")[2]))])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n"
                               for i, p in [("a", "Hi."), ("big", "HUGE " * 50), ("b", "Hello.")]))
    summary = run(GenerateConfig(constitution="constitution/hhh.yaml", prompts=str(prompts), model="m", engine="openai",
                                 out=str(tmp_path / "run"), rounds=1, few_shot=0,
                                 base_url=url, concurrency=2, quiet=True))
    assert (summary.done, summary.failed) == (2, 1)
    assert sorted(r["id"] for r in RunStore(tmp_path / "run").iter_records()) == ["a", "b"]
    [failed] = [json.loads(line) for line in (tmp_path / "run" / "failed.jsonl").read_text().splitlines()]
    assert failed["id"] == "big" and failed["error"] == "HTTP 400: prompt is too long"


def test_gives_up_after_max_retries(scripted):
    use, url = scripted
    server = use([(502, {}, "bad gateway")])
    with (OpenAIEngine("m", base_url=url, max_retries=2, backoff=0.01) as engine,
          pytest.raises(CaiError, match="after 3 attempts: HTTP 502: bad gateway")):
        engine.generate([USER], SamplingParams())
    assert len(server.requests) == 3


def test_connection_refused_at_start_is_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"                 # nothing listens there
    with pytest.raises(CaiError, match=f"no server answers: {url} \\(ConnectError"):
        OpenAIEngine("m", base_url=url, max_retries=1, backoff=0.01).generate([USER], SamplingParams())


def test_concurrent_results_keep_input_order(scripted):
    use, url = scripted

    def echo(body):
        text = body["messages"][-1]["content"]
        time.sleep(0.05 * (5 - int(text)))                      # early prompts answer last
        return ok(text, prompt=int(text), completion=1, finish="length")[2]

    server = use([(200, {}, echo)])
    convs = [[{"role": "user", "content": str(i)}] for i in range(6)]
    with OpenAIEngine("m", base_url=url, concurrency=4) as engine:
        out = engine.generate(convs, SamplingParams())
    assert [c.text for c in out] == [str(i) for i in range(6)]
    assert [c.prompt_tokens for c in out] == list(range(6))
    assert all(c.finish_reason == "length" for c in out)
    assert len(server.requests) == 6


# --- a real vLLM OpenAI server on the tiny model -----------------------------------------------

@pytest.fixture(scope="module")
def vllm_server(request, tmp_path_factory):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (pip install -e '.[vllm]')")
    model_dir = request.getfixturevalue("tiny_vllm_model_dir")
    with openai_server(model_dir, tmp_path_factory.mktemp("vllm-server"), timeout=240) as url:
        yield url


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_server(vllm_server):
    convs = [[{"role": "user", "content": f"Item {i}: " + "more " * i}] for i in range(5)]
    with OpenAIEngine("tiny", base_url=vllm_server, concurrency=3) as engine:
        greedy = engine.generate(convs, SamplingParams(max_new_tokens=6))
        again = engine.generate(convs, SamplingParams(max_new_tokens=6))
        assert len(greedy) == 5
        counts = [c.prompt_tokens for c in greedy]
        assert counts == sorted(counts) and len(set(counts)) == 5           # input order kept
        assert all(c.completion_tokens == 6 and c.finish_reason == "length" for c in greedy)
        assert [c.text for c in greedy] == [c.text for c in again]
        def sample(seed):
            params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=seed)
            return [c.text for c in engine.generate(convs[:2], params)]
        assert sample(11) == sample(11)
        assert sample(11) != sample(12)
        # The guard asks the server: its context (/v1/models) and each prompt's tokens (/tokenize).
        assert engine.context_length() == 512 and engine.count_tokens(convs) == counts
        overlong = [{"role": "user", "content": "word " * 600}]
        with pytest.raises(PromptRejected) as refused:
            ContextGuard(engine).generate([convs[0], overlong], SamplingParams(max_new_tokens=6))
        assert list(refused.value.reasons) == [1] and "context is 512" in refused.value.reasons[1]
        with pytest.raises(PromptRejected) as refused:       # unguarded, the server's own 400 refuses it alone
            engine.generate([convs[0], overlong], SamplingParams(max_new_tokens=6))
        assert list(refused.value.reasons) == [1] and "HTTP 400" in refused.value.reasons[1]
        with pytest.raises(CaiError, match="does not serve model 'no-such-model' \\(it serves 'tiny'\\)") as err:
            OpenAIEngine("no-such-model", base_url=vllm_server).generate(convs[:1], SamplingParams())
        assert "\n" not in str(err.value)
