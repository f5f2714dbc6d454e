"""A judge served by a real vLLM server on the CPU, against cai's in-process vLLM engine on the same model.

The model is the embedded SmolLM2-135M (a real chat model: it puts real probability on
the labels), the questions are AI-feedback comparisons of real HH-RLHF pairs. Both
engines start once for the module, with the same dtype; vLLM takes a minute or more to
start on two busy cores.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from support import REPO, cli
from support.hh import hh_pairs
from support.vllm_env import vllm_env
from support.vllm_server import openai_server

from cai.constitution import load_constitution
from cai.engines.openai_server import OpenAIEngine
from cai.generation.templates import Templates
from cai.judging.labels import LABELS, compare

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HHH = load_constitution(REPO / "constitution" / "hhh.yaml")


def _dtype() -> str:
    from pathlib import Path

    from cai.engines.vllm import cpu_dtype, cpu_flags

    return cpu_dtype(cpu_flags(Path("/proc/cpuinfo").read_text()))


@pytest.fixture(scope="module")
def judge_url(embedded_model_dir, tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    with openai_server(embedded_model_dir, tmp_path_factory.mktemp("judge-server"), "--dtype", _dtype(),
                       name="judge", max_model_len=2048, timeout=600) as url:
        yield url


@pytest.fixture(scope="module")
def local_judge(embedded_model_dir, tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    from cai.engines.vllm import VLLMEngine

    mp = pytest.MonkeyPatch()
    for key, value in vllm_env(tmp_path_factory.mktemp("local-judge")).items():
        mp.setenv(key, value)
    mp.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    engine = VLLMEngine(str(embedded_model_dir), enforce_eager=True, kv_cache_gib=1, max_model_len=2048,
                        dtype=_dtype())
    engine.load()
    yield engine
    engine.close()
    mp.undo()


@pytest.fixture(scope="module")
def questions():
    """Each of 24 real pairs asked under a principle of hhh.yaml, in both option orders: 48 conversations."""
    pairs = hh_pairs(24)
    principles = [p for p in HHH.principles if p.enabled]
    items = [(q, x, y, principles[i % len(principles)]) for i, (q, x, y) in enumerate(pairs)]
    chats = []
    for prompt, x, y, principle in items:
        for a, b in ((x, y), (y, x)):
            text = Templates().render("feedback", prompt=prompt, principle=principle, response_a=a, response_b=b,
                                      labels=list(LABELS))
            chats.append([{"role": "user", "content": text}])
    return items, chats


def p_first(logprobs) -> float:
    a, b = logprobs
    return 1 / (1 + math.exp(b - a))


def test_served_label_probabilities_and_verdicts_match_the_in_process_engine(judge_url, local_judge, questions):
    items, chats = questions
    with OpenAIEngine("judge", base_url=judge_url, concurrency=8) as server:
        assert server.label_mode(list(LABELS)).exact                          # vLLM: exact token ids
        served = server.label_reads(chats, list(LABELS))
        served_verdicts = compare(server, Templates(), items)
    local = local_judge.label_logprobs(chats, list(LABELS))
    assert all(r.error is None and r.floored == () for r in served)
    gaps = [abs(p_first(r.logprobs) - p_first(row)) for r, row in zip(served, local)]
    assert max(gaps) <= 0.02, gaps
    local_verdicts = compare(local_judge, Templates(), items)
    same = sum((s["label"] > 0.5) == (v["label"] > 0.5) for s, v in zip(served_verdicts, local_verdicts))
    assert same / len(items) >= 0.95
    assert len({round(v["label"], 3) for v in local_verdicts}) > len(items) // 2     # real labels, not constants


def test_top_logprobs_agree_with_exact_ids_and_floor_only_labels_outside_the_top_20(judge_url, questions):
    _, chats = questions
    with OpenAIEngine("judge", base_url=judge_url, concurrency=8) as exact_engine:
        exact = exact_engine.label_reads(chats, list(LABELS))
    with OpenAIEngine("judge", base_url=judge_url, concurrency=8) as top_engine:
        top_engine.label_exact_ids = False
        assert top_engine.label_mode(list(LABELS)).describe() == "top_logprobs 20"
        top = top_engine.label_reads(chats, list(LABELS))
    whole = [(t, e) for t, e in zip(top, exact) if not t.floored]
    floored = [(t, e) for t, e in zip(top, exact) if t.floored]
    assert whole, "no question had both labels in the top 20"
    for t, e in whole:
        assert abs(p_first(t.logprobs) - p_first(e.logprobs)) <= 0.02
    for t, e in floored:                              # a floored label really is below the lowest of the top 20
        for label, floor_value, exact_value in zip(LABELS, t.logprobs, e.logprobs):
            if label in t.floored:
                assert exact_value <= floor_value + 1e-3


# prompts the embedded model answers quickly; the run is generated and judged over the same server
PROMPTS = ["How do I keep a basil plant alive?", "What is a good way to learn to juggle?",
           "How can I get better sleep?", "How do I pick a lock?"]


def test_verify_judge_over_the_server_then_a_new_margin_asks_nothing(judge_url, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    run = tmp_path / "run"
    cli(["generate", "-c", REPO / "constitution" / "hhh.yaml", "--prompts", prompts, "--engine", "openai",
         "--base-url", judge_url, "--model", "judge", "--rounds", 1, "--few-shot", 0, "--max-new-tokens", 48,
         "--out", run, "--no-pairs"])
    flags = ["--verify", "judge", "--no-filter", "--keep-truncated", "--skip-rule", "few-shot-copy",
             "--skip-rule", "critique-echo", "--skip-rule", "repetition-loop", "--skip-rule", "meta-comment",
             "--skip-rule", "off-topic"]
    first = " ".join(cli(["data", "pairs", run, *flags]).output.split())       # the run's server judges
    judged = re.search(r"judge judge \(openai at \S+\): (\d+) requests, (\d+) answers from the cache", first)
    assert judged and int(judged.group(1)) > 0 and judged.group(2) == "0", first
    rows = [json.loads(line) for line in (run / "dataset" / "dropped.jsonl").read_text().splitlines()]
    rows += [json.loads(line) for s in ("train_prefs", "test_prefs")
             for line in (run / "dataset" / f"{s}.jsonl").read_text().splitlines()]
    assert rows and all(0 < r["judge_preference"] < 1 for r in rows if "judge_preference" in r)
    again = " ".join(cli(["data", "pairs", run, *flags, "--verify-margin", "0.3"]).output.split())
    assert f"0 requests, {judged.group(1)} answers from the cache" in again, again
