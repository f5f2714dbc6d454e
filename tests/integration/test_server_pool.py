"""`--engine openai` against stub servers on 127.0.0.1: the adaptive limit, balancing, failover, bad URLs.

The stubs (tests/support/stub_server.py) batch like an LLM server, answer 429 past a capacity, or die
mid-run. Two real vLLM servers run the same checks in test_server_pool_vllm.py.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from support.stub_server import StubServer, batching, chat_answer, overloading
from support.vllm_env import free_port

from cai.engines.base import SamplingParams
from cai.engines.openai_server import OpenAIEngine
from cai.errors import CaiError


def chats(n: int, tag: str = "") -> list[list[dict]]:
    return [[{"role": "user", "content": f"{tag}{i}"}] for i in range(n)]


@pytest.fixture
def stubs():
    started: list[StubServer] = []

    def start(answer, **kwargs) -> StubServer:
        started.append(StubServer(answer, **kwargs).start())
        return started[-1]

    yield start
    for stub in started:
        stub.kill()


def summary(engine: OpenAIEngine) -> list[dict]:
    return engine.info().extra["concurrency"]["servers"]


def test_429_lowers_the_limit_and_every_request_is_answered(stubs):
    server = stubs(overloading(capacity=6, seconds=0.02))
    with OpenAIEngine("m", base_url=server.url, backoff=0.01, max_retries=8) as engine:
        out = engine.generate(chats(300), SamplingParams())
        [state] = summary(engine)
    assert [c.text for c in out] == [str(i) for i in range(300)]
    assert server.refused > 0                       # the server did push back ...
    assert state["limit_range"][0] <= 8             # ... and the limit came down from 16 at the first 429s
    assert state["limit"] <= 12
    assert engine.info().extra["concurrency"]["mode"] == "adaptive"


def test_the_limit_rises_while_throughput_grows_and_stops_where_it_stops(stubs):
    big = stubs(batching(knee=48, seconds=0.1))
    small = stubs(batching(knee=6, seconds=0.1))
    with OpenAIEngine("m", base_url=big.url) as engine:
        engine.generate(chats(1200), SamplingParams())
        [on_big] = summary(engine)
    with OpenAIEngine("m", base_url=small.url) as engine:
        engine.generate(chats(300), SamplingParams())
        [on_small] = summary(engine)
    assert on_big["limit_range"][1] >= 48 and on_big["limit"] >= 32
    assert on_big["limit_changes"][0].startswith("16->32: first window")      # the manifest says why it moved
    assert big.most_in_flight >= 32                 # twice the 16 it starts at (a loaded CPU sends fewer than 48)
    assert on_small["limit_range"][1] == 32 and on_small["limit"] <= 16      # no gain past 6: back down


def test_a_fixed_concurrency_is_kept(stubs):
    server = stubs(batching(knee=48, seconds=0.05))
    with OpenAIEngine("m", base_url=server.url, concurrency=5) as engine:
        engine.generate(chats(200), SamplingParams())
        [state] = summary(engine)
    assert server.most_in_flight == 5 and state["limit_range"] == [5, 5]
    assert engine.info().extra["concurrency"]["mode"] == "fixed"


def test_requests_are_balanced_and_a_dead_server_is_taken_out_then_put_back(stubs):
    a, b = stubs(batching(knee=100, seconds=0.05)), stubs(batching(knee=100, seconds=0.05))
    with OpenAIEngine("m", base_url=[a.url, b.url], probe_every=0.1, backoff=0.01) as engine:
        results, at_kill = {}, {}

        def run():
            results["out"] = engine.generate(chats(400), SamplingParams())

        thread = threading.Thread(target=run)
        thread.start()
        while b.served < 60:
            time.sleep(0.005)
        at_kill.update(a=a.served, b=b.served)
        b.kill()                                      # requests in flight on b get no answer
        thread.join(60)
        assert [c.text for c in results["out"]] == [str(i) for i in range(400)]   # all answered, once, in order
        assert 0.5 <= at_kill["a"] / at_kill["b"] <= 2                            # balanced while both lived
        state = {s["url"]: s for s in summary(engine)}
        assert state[b.url]["up"] is False and state[b.url]["taken_out"] == 1
        assert a.served >= 400 - at_kill["b"]         # the rest, retries of b's lost requests too, went to a

        b.start()                                     # back on the same port: the probe puts it back
        deadline = time.monotonic() + 10
        while not all(s["up"] for s in summary(engine)) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = b.served
        engine.generate(chats(100, "again "), SamplingParams())
        assert b.served - before >= 20


def test_when_every_server_dies_the_requests_fail_with_the_reason(stubs):
    a = stubs(batching(knee=10, seconds=0.05))
    with OpenAIEngine("m", base_url=a.url, probe_every=0.1, backoff=0.01, max_retries=2) as engine:
        a.kill()
        with pytest.raises(CaiError, match="failed after 3 attempts: ConnectError"):
            engine.generate(chats(4), SamplingParams())


def test_no_server_answering_at_start_is_one_line_naming_each():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    with pytest.raises(CaiError) as err:
        OpenAIEngine("m", base_url=urls).load()
    message = str(err.value)
    assert message.startswith("no server answers: ") and all(url in message for url in urls)
    assert "ConnectError" in message and "\n" not in message


def test_a_server_that_serves_another_model_is_refused_at_start(stubs):
    right, wrong = stubs(batching(knee=10, seconds=0.01)), stubs(batching(knee=10, seconds=0.01), model="other")
    with pytest.raises(CaiError, match=f"{wrong.url} does not serve model 'm' \\(it serves 'other'\\)"):
        OpenAIEngine("m", base_url=[right.url, wrong.url]).load()


def test_a_server_down_at_start_joins_when_it_answers(stubs):
    a = stubs(batching(knee=100, seconds=0.02))
    late = StubServer(batching(knee=100, seconds=0.02))
    late.port = free_port()
    try:
        with OpenAIEngine("m", base_url=[a.url, late.url], probe_every=0.1) as engine:
            assert [s["up"] for s in summary(engine)] == [True, False]
            late.start()
            deadline = time.monotonic() + 10
            while not summary(engine)[1]["up"] and time.monotonic() < deadline:
                time.sleep(0.05)
            engine.generate(chats(60), SamplingParams())
        assert late.served >= 15
    finally:
        late.kill()


def test_generate_grows_its_batches_to_keep_the_server_full_and_records_the_limit(stubs, tmp_path):
    """With the default batch of 16, a server that takes 48 at once still gets more than 16 in flight."""
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run

    server = stubs(batching(knee=48, seconds=0.2))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(400)))
    summary_ = run(GenerateConfig(constitution="constitution/hhh.yaml", prompts=str(prompts), model="m",
                                  engine="openai", out=str(tmp_path / "run"), rounds=0, few_shot=0,
                                  base_url=[server.url], quiet=True, pairs=False))
    assert summary_.done == 400
    assert server.most_in_flight > 16
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    [state] = manifest["engine_info"]["extra"]["concurrency"]["servers"]
    assert state["url"] == server.url and state["requests"] == 400
    assert state["limit_range"][0] == 16 and state["limit_range"][1] > 16


def test_requests_go_to_the_server_with_fewest_in_flight(stubs):
    """A slow server holds its requests longer, so the fast one, with fewer outstanding, gets more of them."""
    fast, slow = stubs(batching(knee=100, seconds=0.01)), stubs(batching(knee=100, seconds=0.2))
    with OpenAIEngine("m", base_url=[fast.url, slow.url], concurrency=4) as engine:
        engine.generate(chats(200), SamplingParams())
    assert fast.served > 3 * slow.served and slow.served > 0


def test_a_server_that_keeps_failing_is_taken_out(stubs):
    good = stubs(batching(knee=100, seconds=0.01))
    broken = stubs(lambda stub, body: (500, {"error": {"message": "engine dead"}}))
    with OpenAIEngine("m", base_url=[good.url, broken.url], backoff=0.01, probe_every=30) as engine:
        out = engine.generate(chats(100), SamplingParams())
        state = summary(engine)
    assert [c.text for c in out] == [str(i) for i in range(100)]
    assert state[1]["up"] is False and state[1]["reason"] == "HTTP 500: engine dead"
    assert broken.refused <= 3 + 16                 # out after 3 in a row; only what was already in flight


def test_a_prompt_goes_to_its_next_stage_while_other_answers_still_run(stubs, tmp_path):
    """No stage boundary on a server: critiques are sent while answers of the same batch are still running."""
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run
    from cai.generation.store import RunStore

    spans: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 3: []}     # by user turns: answer, critique, revise
    rng = random.Random(0)

    def answer(stub, body):
        if "max_tokens" not in body:                        # /tokenize: a server without it, as most are
            return 404, {"error": "not found"}
        started = time.monotonic()
        time.sleep(rng.uniform(0.01, 0.3))                  # replies of different lengths take different times
        spans[sum(m["role"] == "user" for m in body["messages"])].append((started, time.monotonic()))
        return 200, chat_answer(body["messages"][-1]["content"])

    server = stubs(answer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(100)))
    result = run(GenerateConfig(constitution="constitution/hhh.yaml", prompts=str(prompts), model="m",
                                engine="openai", out=str(tmp_path / "run"), rounds=1, few_shot=0,
                                batch_size=100, base_url=[server.url], quiet=True, pairs=False))
    assert (result.done, server.served) == (100, 300)
    assert [len(spans[k]) for k in (1, 2, 3)] == [100, 100, 100]
    last_answer = max(end for _, end in spans[1])
    assert min(start for start, _ in spans[2]) < last_answer        # a critique went out before the last answer
    records = list(RunStore(tmp_path / "run").iter_records())
    assert sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(100))
    assert all(r["rounds"][0]["critique"] and r["final_response"] for r in records)
