"""`cai generate --engine vllm` end to end on a tiny model (skipped where vllm is not installed).

One run with an overlong prompt among good ones, then resumes: logs, the context guard and retries
as a user meets them, each run a process of its own so the output of vLLM's workers is seen too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from support.vllm_env import vllm_env

from cai.generation.store import RunStore

pytestmark = pytest.mark.vllm

CAI = [sys.executable, "-m", "cai.cli.main"]
VLLM_LOG_LINE = re.compile(r"^(\(\w+ pid=\d+\) )?(INFO|WARNING|DEBUG) \d\d-\d\d ", re.MULTILINE)


@pytest.mark.slow
def test_generate_with_vllm_fails_an_overlong_prompt_alone_quietly_and_resumes(tmp_path, tiny_vllm_model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    env = {**os.environ, **vllm_env(tmp_path / "cache")}
    for key in ("VLLM_LOGGING_LEVEL", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        env.pop(key, None)
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": f"v{i}", "prompt": f"Tell me about topic {i}."} for i in range(4)]
    rows.insert(3, {"id": "huge", "prompt": "Read this page. " + "lorem ipsum dolor sit amet " * 20_000})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    args = CAI + ["generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts),
                  "--model", str(tiny_vllm_model_dir), "--engine", "vllm", "--out", str(run), "--rounds", "1",
                  "--max-new-tokens", "6", "--few-shot", "1", "--batch-size", "3", "--no-pairs", "--quiet"]

    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [json.loads(line) for line in first.stdout.splitlines()]       # stdout: JSON lines only
    summary = lines[-1]
    assert (summary["done"], summary["failed"]) == (4, 1)
    assert not VLLM_LOG_LINE.search(first.stderr), first.stderr[:2000]    # vLLM's INFO/WARNING lines stay out
    assert len(first.stderr.splitlines()) < 10, first.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert summary["wall_seconds"] - manifest["engine_load_seconds"] < 60        # no minutes spent on the long one
    assert manifest["engine_info"]["extra"]["max_model_len"] == 2048
    records = list(RunStore(run).iter_records())
    assert sorted(r["id"] for r in records) == ["v0", "v1", "v2", "v3"]
    assert all(r["engine"] == "vllm" and r["rounds"][0]["revision"] for r in records)
    [failed] = [json.loads(line) for line in (run / "failed.jsonl").read_text().splitlines()]
    assert failed["id"] == "huge" and re.fullmatch(r"prompt is \d{5,} tokens; context is 2048 \(\d+ kept for what "
                                                   r"follows the prompt\)", failed["error"])
    # The overlong prompt never reached the engine: the second batch's answer stage ran one prompt.
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["prompts"] for e in events if e["stage"] == "answer"] == [3, 1]

    # Resume: the failed prompt is tried again (and fails again, listed once); --verbose shows vLLM's logs.
    again = subprocess.run(args + ["--verbose"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["skipped_done"], summary["done"], summary["failed"]) == (4, 0, 1)
    assert VLLM_LOG_LINE.search(again.stderr)
    assert [json.loads(line)["id"] for line in (run / "failed.jsonl").read_text().splitlines()] == ["huge"]

    # --no-retry-failed: nothing left to do, so no engine start at all.
    skipped = subprocess.run(args + ["--no-retry-failed"], capture_output=True, text=True, env=env, timeout=600)
    summary = json.loads(skipped.stdout.splitlines()[-1])
    assert (summary["skipped_failed"], summary["done"], summary["failed"]) == (1, 0, 0)
    manifest = json.loads((run / "manifest.json").read_text())
    assert "engine_load_seconds" not in manifest and manifest["engine_info"]["name"] == "vllm"
    assert len(list(RunStore(run).iter_records())) == 4
