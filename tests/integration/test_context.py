"""Long prompts on the transformers engine: the context guard, split-retry, token-budget micro-batches, resume.

The tiny random Llama has a context of 2048 tokens; its tokenizer is the real SmolLM2 one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai.engines.base import PromptRejected, SamplingParams
from cai.engines.transformers import TransformersEngine, micro_batches
from cai.generation.context import CUT_MARK, ContextGuard, Fitted, Limit, fit_prompts, head_and_tail
from cai.generation.loop import BatchResult
from cai.generation.prompt_files import PromptRecord
from cai.generation.store import RunStore
from cai.generation.worker import run_split

CAI = [sys.executable, "-m", "cai.cli.main"]
HUGE = ("The quick brown fox jumps over the lazy dog. " * 9_000).strip()        # about 400,000 characters


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with TransformersEngine(tiny_model_dir, batch_size=4) as loaded:
        yield loaded


def user(text):
    return [{"role": "user", "content": text}]


def _write_prompts(path: Path, prompts: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "prompt": v}) + "\n" for k, v in prompts.items()))
    return path


def _failed(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "failed.jsonl").read_text().splitlines()]


def _summary(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


# --- the engine knows its context and counts like it renders --------------------------------------

def test_engine_counts_tokens_as_it_sends_them(engine):
    conversations = [user("Hi."), user("Tell me a long story about the sea. " * 20)]
    counts = engine.count_tokens(conversations)
    sent = engine.generate(conversations, SamplingParams(max_new_tokens=2))
    assert counts == [c.prompt_tokens for c in sent] and counts[0] < counts[1]
    assert engine.context_length() == 2048


def test_guard_refuses_only_the_conversation_that_overflows(engine):
    guard = ContextGuard(engine)
    short, long = user("Hi."), user(HUGE[:20_000])
    with pytest.raises(PromptRejected) as refused:
        guard.generate([short, long, short], SamplingParams(max_new_tokens=4))
    assert list(refused.value.reasons) == [1]
    n = engine.count_tokens([long])[0]
    assert refused.value.reasons[1] == f"prompt is {n} tokens; context is 2048 (4 kept for what follows the prompt)"
    assert [c.completion_tokens for c in guard.generate([short, short], SamplingParams(max_new_tokens=4))] == [4, 4]


# --- skip or truncate before a batch runs -------------------------------------------------------

def test_fit_prompts_skips_with_the_reason_or_cuts_head_and_tail(engine):
    prompts = ["What is two plus two?", "START " + HUGE + " END"]
    def conversation(i, text):
        return [{"role": "system", "content": "Be brief."}, *user(text)]
    limit = Limit(engine.context_length(), reserve=64)
    skipped = fit_prompts(engine, prompts, conversation, limit, "skip")
    assert skipped[0] == Fitted(prompts[0])
    n = engine.count_tokens([conversation(1, prompts[1])])[0]
    assert skipped[1] == f"prompt is {n} tokens; context is 2048 (64 kept for what follows the prompt)"

    cut = fit_prompts(engine, prompts, conversation, limit, "truncate")[1]
    assert isinstance(cut, Fitted) and cut.truncated["original_tokens"] == n
    assert cut.prompt.startswith("START The quick") and cut.prompt.endswith("lazy dog. END")
    assert "characters cut" in cut.prompt
    kept = engine.count_tokens([conversation(1, cut.prompt)])[0]
    assert kept == cut.truncated["kept_tokens"] and 2048 - 64 - 100 <= kept <= 2048 - 64   # fits, and not much less

    user_limit = Limit(engine.context_length(), reserve=64, max_prompt_tokens=10)
    assert fit_prompts(engine, prompts[:1], conversation, user_limit)[0].startswith("prompt is ")
    assert "--max-prompt-tokens is 10" in fit_prompts(engine, prompts[:1], conversation, user_limit)[0]


def test_head_and_tail():
    assert head_and_tail("abcdefghij", 4) == "ab" + CUT_MARK.format(n=6) + "ij"
    assert head_and_tail("abc", 10) == "abc"


# --- split-retry --------------------------------------------------------------------------------

def test_a_failing_batch_is_split_down_to_the_prompt_that_fails():
    batch = [PromptRecord(f"q{i}", f"prompt {i}", "test") for i in range(8)]
    calls = []

    def run_one(part):
        calls.append([p.id for p in part])
        if any(p.id == "q5" for p in part):
            raise RuntimeError("out of memory")
        return BatchResult([{"id": p.id} for p in part])

    results = []
    failed = run_split(run_one, batch, 1, results.append)
    assert sorted(r["id"] for res in results for r in res.records) == [f"q{i}" for i in range(8) if i != 5]
    assert failed == {"q5": "RuntimeError: out of memory"}
    # Only the failing half is split again (8 -> 4 -> 2 -> 1); the failing prompt alone is tried once more.
    assert calls == [[f"q{i}" for i in range(8)], ["q0", "q1", "q2", "q3"], ["q4", "q5", "q6", "q7"],
                     ["q4", "q5"], ["q4"], ["q5"], ["q5"], ["q6", "q7"]]


def test_a_refused_prompt_is_dropped_and_the_rest_runs_again():
    batch = [PromptRecord(f"q{i}", f"prompt {i}", "test") for i in range(4)]
    calls = []

    def run_one(part):
        calls.append([p.id for p in part])
        bad = {i: "too long" for i, p in enumerate(part) if p.id in ("q1", "q3")}
        if bad:
            raise PromptRejected(bad)
        return BatchResult([{"id": p.id} for p in part])

    results = []
    failed = run_split(run_one, batch, 1, results.append)
    assert calls == [["q0", "q1", "q2", "q3"], ["q0", "q2"]]
    assert failed == {"q1": "too long", "q3": "too long"} and [r["id"] for r in results[0].records] == ["q0", "q2"]


# --- token-budget micro-batches ------------------------------------------------------------------

def test_micro_batches_keep_rows_times_length_within_the_budget():
    lengths = [10, 500, 20, 480, 30, 15]
    groups = micro_batches(lengths, new_tokens=20, max_rows=4, max_tokens=1100)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for group in groups:
        assert len(group) <= 4 and len(group) * (max(lengths[i] for i in group) + 20) <= 1100
    assert groups[0] == [0, 5, 2, 4]             # shortest first, all short ones together
    assert micro_batches([10] * 5, 0, max_rows=2, max_tokens=10**6) == [[0, 1], [2, 3], [4]]


def test_budget_splits_a_batch_of_long_prompts_with_the_same_output(tiny_model_dir, engine):
    conversations = [user(f"Question {i}: " + "tell me more " * (20 * i)) for i in range(1, 6)]
    params = SamplingParams(max_new_tokens=6)
    roomy = engine.generate(conversations, params)
    lengths = engine.count_tokens(conversations)
    budget = 2 * (max(lengths) + 6)              # two of the longest rows at most
    with TransformersEngine(tiny_model_dir, batch_size=8, max_batch_tokens=budget) as tight:
        assert len(micro_batches(lengths, 6, 8, budget)) >= 2          # one batch of 8 rows would not fit
        assert [c.text for c in tight.generate(conversations, params)] == [c.text for c in roomy]
        tight.max_batch_tokens = max(lengths) + 5            # the longest row alone no longer fits
        with pytest.raises(PromptRejected) as refused:
            tight.generate(conversations, params)
        assert list(refused.value.reasons) == [4] and "--max-batch-tokens" in refused.value.reasons[4]


def test_default_budget_comes_from_free_memory(engine):
    from cai.engines.transformers import bytes_per_token, default_batch_tokens

    config = engine.model.config
    per_token = bytes_per_token(config, 4)
    # tiny model: 2 layers x 4 kv heads x 16 dims x k and v x 4 bytes, plus one layer's activations
    assert per_token == 2 * 2 * 4 * 16 * 4 + (8 * 64 + 4 * 128) * 4
    assert default_batch_tokens(config, 4, 8 * 2**30) == 4 * 2**30 // per_token
    assert engine.max_batch_tokens > 10_000 and engine.info().extra["max_batch_tokens"] == engine.max_batch_tokens


# --- end to end: one 400,000-character prompt among good ones -----------------------------------

def test_one_overlong_prompt_fails_alone_with_its_reason_and_resume_retries_it(tmp_path, tiny_model_dir):
    prompts = _write_prompts(tmp_path / "prompts.jsonl", {
        "a": "Tell me about bread.", "huge": HUGE, "b": "Tell me about owls.", "c": "Tell me about maps."})
    run = tmp_path / "run"
    args = CAI + ["generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts), "--model", str(tiny_model_dir),
                  "--out", str(run), "--rounds", "1", "--max-new-tokens", "6", "--few-shot", "1",
                  "--batch-size", "4", "--quiet", "--no-pairs"]
    start = time.monotonic()
    summary = _summary(subprocess.run(args, capture_output=True, text=True, timeout=300))
    assert time.monotonic() - start < 60        # no 40 GB allocation, no minutes of prefill
    assert (summary["done"], summary["failed"]) == (3, 1)
    assert sorted(r["id"] for r in RunStore(run).iter_records()) == ["a", "b", "c"]
    [failed] = _failed(run)
    assert failed["id"] == "huge" and failed["prompt_chars"] == len(HUGE)
    manifest = json.loads((run / "manifest.json").read_text())
    # The prompt must leave room for the answer, the critique and revision requests, and their replies.
    limit = manifest["prompt_limit"]["max_prompt_tokens"]
    assert 2048 - 200 < limit < 2048 - 3 * 6
    assert re.fullmatch(rf"prompt is \d{{5,}} tokens; context is 2048 "
                        rf"\({2048 - limit} kept for what follows the prompt\)",
                        failed["error"]), failed["error"]
    assert manifest["totals"]["failed"] == 1 and manifest["engine_info"]["extra"]["dtype"] == "float32"

    again = _summary(subprocess.run(args, capture_output=True, text=True, timeout=300))     # retried, fails again
    assert (again["skipped_done"], again["done"], again["failed"]) == (3, 0, 1)
    assert [f["id"] for f in _failed(run)] == ["huge"]       # one line per prompt, not one per try

    skipped = _summary(subprocess.run(args + ["--no-retry-failed"], capture_output=True, text=True, timeout=300))
    assert (skipped["skipped_failed"], skipped["done"], skipped["failed"]) == (1, 0, 0)

    cut = _summary(subprocess.run(args + ["--on-long", "truncate"], capture_output=True, text=True, timeout=300))
    assert (cut["done"], cut["failed"]) == (1, 0)
    record = {r["id"]: r for r in RunStore(run).iter_records()}["huge"]
    assert record["prompt_truncated"]["original_chars"] == len(HUGE)
    assert record["prompt"].startswith("The quick brown fox") and "characters cut" in record["prompt"]
    assert not (run / "failed.jsonl").read_text()            # done now: no longer listed as failed
    assert json.loads((run / "manifest.json").read_text())["totals"]["failed"] == 0


def test_a_conversation_that_outgrows_the_context_in_a_later_stage_fails_alone(tmp_path, tiny_model_dir, engine,
                                                                                capsys):
    """With --max-prompt-tokens at the context minus one reply, the answer prompt fits; with the answer and
    the critique request added it no longer does. (The default limit would have skipped it before the batch.)"""
    from cai.constitution import load_constitution
    from cai.generation.config import GenerateConfig
    from cai.generation.conversation import answer_conversation
    from cai.generation.job import run
    from cai.generation.templates import Templates

    constitution, templates = load_constitution("constitution/hhh.yaml"), Templates()
    new_tokens = 40
    words = 100
    while engine.count_tokens([answer_conversation(templates, constitution, "word " * words, few_shot=0)])[0] \
            < 2048 - new_tokens - 8:
        words += 8
    prompts = _write_prompts(tmp_path / "prompts.jsonl", {"a": "Tell me about tea.", "edge": "word " * words,
                                                          "b": "Tell me about chess."})
    summary = run(GenerateConfig(constitution="constitution/hhh.yaml", prompts=str(prompts), model=str(tiny_model_dir),
                                 out=str(tmp_path / "run"), rounds=1, max_new_tokens=new_tokens, few_shot=0,
                                 batch_size=3, max_prompt_tokens=2048 - new_tokens, quiet=True))
    assert (summary.done, summary.failed) == (2, 1)
    [failed] = _failed(tmp_path / "run")
    assert failed["id"] == "edge" and f"context is 2048 ({new_tokens} kept for what follows" in failed["error"]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    answers = [e["prompts"] for e in events if e.get("stage") == "answer"]
    assert answers == [3, 2]            # the batch ran again without the prompt that outgrew the context
