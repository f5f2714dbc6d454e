"""A real 2-process DDP launch through `accelerate launch` on the CPU (gloo) with a tiny model."""

from __future__ import annotations

import json

from support.train import write_preferences
from typer.testing import CliRunner

from cai.cli.main import app


def test_two_process_ddp_dpo_on_cpu(tmp_path, tiny_model_dir):
    data = write_preferences(tmp_path / "dataset")
    out = tmp_path / "dpo"
    result = CliRunner().invoke(app, [
        "train", "dpo", "--recipe", "smoke/dpo", "--data", str(data), "--model", str(tiny_model_dir),
        "--out", str(out), "--num-processes", "2",
        "--set", "training.max_steps=2", "--set", "training.max_length=128", "--set", "training.logging_steps=1",
        "--set", "training.per_device_train_batch_size=1", "--set", "training.save_strategy=no",
        "--set", "data.eval_split=null"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    begin = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert begin["event"] == "train_begin" and begin["world_size"] == 2
    assert (out / "adapter_model.safetensors").is_file() and (out / ".cai-complete").is_file()
    assert not (out / ".launch-plan.json").exists()


def test_two_process_ddp_grpo_on_cpu(tmp_path, tiny_model_dir):
    """Each process generates for its share of the prompts; rewards are gathered before the group advantages."""
    data = write_preferences(tmp_path / "dataset")
    out = tmp_path / "grpo"
    result = CliRunner().invoke(app, [
        "train", "grpo", "--recipe", "smoke/grpo", "--data", str(data), "--model", str(tiny_model_dir),
        "--out", str(out), "--num-processes", "2",
        "--set", "rewards=[{type: refusal, on: all}, {type: toxicity, weight: 0.5}]",
        "--set", "training.max_steps=2", "--set", "training.per_device_train_batch_size=2",
        "--set", "training.num_generations=2", "--set", "training.max_completion_length=8",
        "--set", "training.save_strategy=no", "--set", "data.eval_split=null"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    assert set(summary["rewards"]) == {"refusal", "toxicity"}
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in steps if "loss" in row]
    assert len(steps) == 2 and all("rewards/toxicity/std" in row and "kl" in row for row in steps)
    assert (out / "adapter_model.safetensors").is_file() and (out / ".cai-complete").is_file()


def test_a_failing_launched_process_is_one_error_line(tmp_path, monkeypatch):
    """A child's `error: ...` line becomes the parent's one-line error; other failures name the exit code."""
    import sys

    import pytest

    from cai.errors import CaiError
    from cai.train import launch

    child = "import sys; print('error: model m: the tokenizer has no chat template', file=sys.stderr); sys.exit(2)"
    monkeypatch.setattr(launch, "launch_command", lambda *a, **k: [sys.executable, "-c", child])
    with pytest.raises(CaiError, match=r"^model m: the tokenizer has no chat template$"):
        launch.run_launched(tmp_path / "plan.json", num_processes=2, preset=None)
    crash = "import sys; print('RuntimeError: gloo timed out', file=sys.stderr); sys.exit(1)"
    monkeypatch.setattr(launch, "launch_command", lambda *a, **k: [sys.executable, "-c", crash])
    with pytest.raises(CaiError, match=r"accelerate launch failed with exit code 1: RuntimeError: gloo timed out"):
        launch.run_launched(tmp_path / "plan.json", num_processes=2, preset=None)
