"""The critique -> revise loop on a scripted engine: stage calls, records, preambles, and the principle plan."""

from __future__ import annotations

import json

import pytest
from support import REPO
from support.engines import FakeEngine, scripted_reply, stage_of

from cai.constitution import load_constitution
from cai.engines.base import PromptRejected, SamplingParams
from cai.generation.loop import LoopConfig, run_batch
from cai.generation.principles import principle_plan
from cai.generation.prompt_files import PromptRecord, iter_prompts
from cai.generation.templates import Templates

HHH = load_constitution(REPO / "constitution" / "hhh.yaml")


def _batch(n: int) -> list[PromptRecord]:
    return [PromptRecord(id=f"p-{i}", prompt=f"How often should I water plant number {i}?", source="test",
                         category="helpful") for i in range(n)]


def _run(engine, batch, rounds=2, max_new_tokens=64):
    cfg = LoopConfig(rounds=rounds, seed=0, few_shot=0, params=SamplingParams(max_new_tokens=max_new_tokens))
    return run_batch(engine, batch, HHH, Templates(), cfg, engine_name="fake", model_name="fake")


def test_each_stage_is_one_engine_call_over_the_whole_batch():
    engine = FakeEngine()
    result = _run(engine, _batch(5))
    assert [s.stage for s in result.stages] == ["answer", "critique r1", "revise r1", "critique r2", "revise r2"]
    assert [len(call) for call in engine.calls] == [5] * 5
    assert sum(s.completion_tokens for s in result.stages) == sum(
        r["usage"]["completion_tokens"] for r in result.records)


def test_records_hold_each_round_under_the_principle_drawn_for_their_prompt():
    result = _run(FakeEngine(), _batch(4))
    for record in result.records:
        plan = principle_plan(HHH, 2, seed=0, prompt_id=record["id"])
        assert [r["principle_id"] for r in record["rounds"]] == [p.id for p in plan]
        assert record["rounds"][0]["critique_request"] == plan[0].critique
        assert record["rounds"][1]["revision_request"].startswith(plan[1].revision)
        assert record["initial_response"].startswith("My first answer on how often should i water")
        assert record["rounds"][0]["critique"] == "It gives no reasons and no example."
        assert record["final_response"] == record["rounds"][-1]["revision"]
    # Different prompts draw different principles: the draw is keyed by prompt id, not shared by the batch.
    assert len({r["rounds"][0]["principle_id"] for r in result.records}) > 1


def test_a_revision_preamble_is_stripped_counted_and_unseen_by_the_next_round():
    def respond(chat):
        reply = scripted_reply(chat)
        return "Sure, here is a revised response: " + reply if stage_of(chat)[0] == "revise" else reply

    engine = FakeEngine(respond=respond)
    result = _run(engine, _batch(3))
    assert result.preambles_stripped == 6          # 3 prompts x 2 rounds
    for record in result.records:
        assert all(r["preamble_stripped"] and not r["revision"].startswith("Sure") for r in record["rounds"])
    critique_r2 = engine.calls[3]
    assert all(not chat[-2]["content"].startswith("Sure") for chat in critique_r2)


def test_a_reply_cut_by_the_token_budget_is_marked_as_such():
    result = _run(FakeEngine(), _batch(2), rounds=1, max_new_tokens=4)
    record = result.records[0]
    assert record["initial_finish"] == "length" and len(record["initial_response"].split()) == 4
    assert record["rounds"][0]["revision_finish"] == "length"


@pytest.mark.parametrize("with_id", [True, False])
def test_render_shows_the_principles_generate_critiques_with(tmp_path, cli, with_id):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"What should I pack for trip {i}?", **({"id": f"trip-{i}"} if with_id else {})}
            for i in range(6)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch = list(iter_prompts(prompts))
    result = _run(FakeEngine(), batch)
    for record in result.records:
        args = ["constitution", "render", "constitution/hhh.yaml", "--prompt", record["prompt"], "--few-shot", "0",
                "--rounds", "2"] + (["--id", record["id"]] if with_id else [])
        shown = cli(args).output
        for r, rnd in enumerate(record["rounds"], 1):
            assert f"critique r{r} (principle {rnd['principle_id']})" in shown


class ServerLikeEngine(FakeEngine):
    """Each conversation its own request, served from many threads at once, like a pool of servers."""

    independent_requests = True

    def __init__(self, fail_on: str | None = None, refuse: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fail_on, self.refuse = fail_on, refuse

    def generate(self, conversations, params):
        text = conversations[0][-1]["content"] if len(conversations) == 1 else ""
        if self.refuse and self.refuse in text:
            raise PromptRejected({0: "prompt is 9000 tokens; context is 8192"})
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("engine fault")
        return super().generate(conversations, params)


def test_an_engine_of_independent_requests_gets_the_same_records_one_request_at_a_time():
    batch = _batch(6)
    batched, each = _run(FakeEngine(), batch), ServerLikeEngine()
    one_by_one = _run(each, batch)
    assert one_by_one.records == batched.records                       # text for text, in input order
    assert [len(call) for call in each.calls] == [1] * 6 * 5            # one request per prompt and stage
    assert [s.stage for s in one_by_one.stages] == [s.stage for s in batched.stages]
    assert [(s.prompts, s.completion_tokens) for s in one_by_one.stages] == [
        (s.prompts, s.completion_tokens) for s in batched.stages]


def test_a_refused_prompt_fails_alone_and_a_fault_stops_the_batch():
    with pytest.raises(PromptRejected) as refused:
        _run(ServerLikeEngine(refuse="plant number 3"), _batch(6))
    assert refused.value.reasons == {3: "prompt is 9000 tokens; context is 8192"}
    engine = ServerLikeEngine(fail_on="plant number 2")
    with pytest.raises(RuntimeError, match="engine fault"):
        _run(engine, _batch(6))
