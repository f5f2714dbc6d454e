"""`cai generate --engine vllm` end to end on a tiny model (skipped where vllm is not installed)."""

from __future__ import annotations

import json

import pytest
from support.vllm_env import vllm_env
from typer.testing import CliRunner

from cai.cli.main import app
from cai.generation.store import RunStore

pytestmark = pytest.mark.vllm


@pytest.mark.slow
def test_generate_with_vllm_writes_records_and_resumes(tmp_path, tiny_vllm_model_dir, monkeypatch):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")
    for key, value in vllm_env(tmp_path / "cache").items():
        monkeypatch.setenv(key, value)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"v{i}", "prompt": f"Tell me about topic {i}."}) + "\n"
                               for i in range(4)))
    args = ["generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts), "--model", str(tiny_vllm_model_dir),
            "--engine", "vllm", "--out", str(tmp_path / "run"), "--rounds", "1", "--max-new-tokens", "6",
            "--few-shot", "1", "--batch-size", "3", "--no-pairs"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = list(RunStore(tmp_path / "run").iter_records())
    assert sorted(r["id"] for r in records) == ["v0", "v1", "v2", "v3"]
    assert all(r["engine"] == "vllm" and r["rounds"][0]["revision"] for r in records)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["prompts"] for e in events if e["stage"] == "answer"] == [3, 1]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["engine"] == "vllm" and manifest["engine_load_seconds"] > 0
    again = CliRunner().invoke(app, args)         # resume: nothing left, no engine start
    assert again.exit_code == 0 and len(list(RunStore(tmp_path / "run").iter_records())) == 4
