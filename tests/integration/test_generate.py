"""`cai generate` end to end on a tiny random Llama: records, batching, resume, lock, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import cli
from support.runs import numbered_prompts, resume_completes, run_records, wait_for
from typer.testing import CliRunner

from cai.cli.main import app
from cai.generation.store import RunStore

CAI = [sys.executable, "-m", "cai.cli.main"]
HHH = "constitution/hhh.yaml"


def _args(model, prompts, out, *extra):
    return ["generate", "--constitution", HHH, "--prompts", str(prompts), "--model", str(model),
            "--out", str(out), "--max-new-tokens", "6", "--few-shot", "1", *extra]


def test_records_follow_the_schema_and_each_stage_is_one_call_per_batch(tmp_path, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 6)
    cli(_args(tiny_model_dir, prompts, tmp_path / "run", "--rounds", "2", "--batch-size", "4"))
    records = run_records(tmp_path / "run")
    assert sorted(records) == [f"q{i:02d}" for i in range(6)]
    r = records["q03"]
    assert r["prompt"] == "Tell me about gardening (3)." and r["category"] == "test"
    assert set(r) >= {"id", "prompt", "source", "category", "initial_response", "rounds", "final_response",
                      "model", "engine", "seed", "usage"}
    assert len(r["rounds"]) == 2 and r["final_response"] == r["rounds"][-1]["revision"]
    assert r["rounds"][0]["principle_id"] != r["rounds"][1]["principle_id"]      # hhh.yaml: no_repeat
    assert set(r["rounds"][0]) >= {"principle_id", "critique_request", "critique", "revision_request", "revision"}
    assert r["usage"]["completion_tokens"] > 0 and r["usage"]["prompt_tokens"] > 0

    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    per_stage = {}
    for e in events:
        per_stage.setdefault(e["stage"], []).append(e["prompts"])
    assert per_stage == {s: [4, 2] for s in ("answer", "critique r1", "revise r1", "critique r2", "revise r2")}

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["fingerprint"]["rounds"] == 2 and len(manifest["fingerprint"]["constitution_sha256"]) == 64
    assert manifest["totals"]["records"] == 6
    assert manifest["totals"]["completion_tokens"] == sum(x["usage"]["completion_tokens"] for x in records.values())
    assert manifest["totals"]["tokens_per_second"] > 0 and "torch" in manifest["versions"]


def test_same_seed_and_greedy_give_the_same_records(tmp_path, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 3)
    cli(_args(tiny_model_dir, prompts, tmp_path / "a", "--rounds", "1"))
    cli(_args(tiny_model_dir, prompts, tmp_path / "b", "--rounds", "1", "--batch-size", "1"))
    assert run_records(tmp_path / "a") == run_records(tmp_path / "b")


def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 10)
    run = tmp_path / "run"
    args = CAI + _args(tiny_model_dir, prompts, run, "--rounds", "1", "--batch-size", "2", "--quiet")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_for(lambda: len(RunStore(run).done_ids()) >= 2), "first batch never landed"
        # While it runs, a second process on the same run is refused.
        second = subprocess.run(args, capture_output=True, text=True)
        assert second.returncode == 2 and f"in use by pid {proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    records = resume_completes(args, run, 10)

    cli(_args(tiny_model_dir, prompts, tmp_path / "straight", "--rounds", "1", "--batch-size", "2"))
    assert records == run_records(tmp_path / "straight")


def test_changed_settings_are_refused_unless_force_new(tmp_path, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 2)
    cli(_args(tiny_model_dir, prompts, tmp_path / "run", "--rounds", "1"))
    again = CliRunner().invoke(app, _args(tiny_model_dir, prompts, tmp_path / "run", "--rounds", "1"))
    assert again.exit_code == 0 and len(run_records(tmp_path / "run")) == 2     # resume: nothing to do
    changed = CliRunner().invoke(app, _args(tiny_model_dir, prompts, tmp_path / "run", "--rounds", "1",
                                            "--constitution", "constitution/harmless.yaml"))
    assert changed.exit_code == 2
    assert "constitution_sha256" in changed.output and "--force-new" in changed.output
    cli(_args(tiny_model_dir, prompts, tmp_path / "run", "--rounds", "1",
                  "--constitution", "constitution/harmless.yaml", "--force-new"))
    [previous] = list((tmp_path / "run" / "previous").iterdir())
    assert len(run_records(tmp_path / "run")) == 2
    # each run keeps the constitution it was made with
    assert "name: hhh" in (previous / "snapshot" / "constitution.yaml").read_text()
    assert (tmp_path / "run" / "snapshot" / "constitution.yaml").read_text() == \
        Path("constitution/harmless.yaml").read_text()
    assert (tmp_path / "run" / "snapshot" / "prompts" / "revision.j2").is_file()


def test_shards_merged_equal_one_run(tmp_path, tiny_model_dir):
    prompts = numbered_prompts(tmp_path, 8)
    cli(_args(tiny_model_dir, prompts, tmp_path / "all", "--rounds", "1"))
    for i in range(2):
        cli(_args(tiny_model_dir, prompts, tmp_path / f"s{i}", "--rounds", "1", "--shard", f"{i}/2"))
    s0, s1 = run_records(tmp_path / "s0"), run_records(tmp_path / "s1")
    assert s0 and s1 and not set(s0) & set(s1)
    cli(["data", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")])
    assert run_records(tmp_path / "merged") == run_records(tmp_path / "all")
    assert (tmp_path / "merged" / "snapshot" / "constitution.yaml").read_text() == Path(HHH).read_text()
    other = tmp_path / "other"
    cli(_args(tiny_model_dir, prompts, other, "--rounds", "1", "--seed", "5", "--limit", "1"))
    refused = CliRunner().invoke(app, ["data", "merge", str(tmp_path / "s0"), str(other),
                                       "--out", str(tmp_path / "m2")])
    assert refused.exit_code == 2 and "fingerprint.seed" in refused.output


def test_an_engine_fault_is_retried_then_recorded_as_failed(tmp_path, tiny_model_dir):
    """A batch the engine cannot serve becomes failed rows; the other batches still finish."""
    from cai.engines.transformers import TransformersEngine
    from cai.generation.config import GenerateConfig
    from cai.generation.job import run

    calls = {"n": 0}

    class Flaky(TransformersEngine):
        def generate(self, conversations, params):
            calls["n"] += 1
            if any("(1)" in c[-1]["content"] for c in conversations):
                raise RuntimeError("device lost")
            return super().generate(conversations, params)

    import cai.engines.registry as registry

    original = registry.create_engine
    registry.create_engine = lambda name, path, **kw: Flaky(path, **kw)
    try:
        summary = run(GenerateConfig(constitution=HHH, prompts=str(numbered_prompts(tmp_path, 3)),
                                     model=str(tiny_model_dir),
                                     out=str(tmp_path / "run"), rounds=1, max_new_tokens=4, few_shot=1,
                                     batch_size=1, quiet=True))
    finally:
        registry.create_engine = original
    assert summary.done == 2 and summary.failed == 1
    failed = [json.loads(x) for x in (tmp_path / "run" / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["q01"] and "device lost" in failed[0]["error"]
    assert sorted(run_records(tmp_path / "run")) == ["q00", "q02"]


@pytest.mark.parametrize("extra,expected", [
    (["--model", "/nonexistent/model"], "model not found"),
    (["--prompts", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
    (["--engine", "tensorrt"], "tensorrt"),
    (["--shard", "3/2"], "--shard"),
    (["--constitution", "README.md"], "README.md"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_model_dir, extra, expected):
    args = _args(tiny_model_dir, numbered_prompts(tmp_path, 1), tmp_path / "run") + extra
    proc = subprocess.run(CAI + args, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) >= 1


@pytest.mark.slow
def test_the_embedded_model_runs_the_whole_loop(tmp_path, embedded_model_cache, monkeypatch):
    monkeypatch.setenv("CAI_CACHE_DIR", str(embedded_model_cache))
    cli(["generate", "--constitution", HHH, "--prompts", "data/helpful.jsonl", "--limit", "2",
             "--rounds", "1", "--max-new-tokens", "12", "--few-shot", "1", "--out", str(tmp_path / "run")])
    records = run_records(tmp_path / "run")
    assert len(records) == 2
    for r in records.values():
        assert r["model"].startswith("SmolLM2-135M-Instruct")
        assert r["initial_response"].strip() and r["rounds"][0]["critique"].strip()


def test_a_model_too_large_for_memory_is_refused_before_loading(tmp_path):
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 16384,
        "intermediate_size": 53248, "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8}))
    proc = subprocess.run(CAI + _args(huge, numbered_prompts(tmp_path, 1), tmp_path / "run"), capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "GiB" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "generations").exists()
