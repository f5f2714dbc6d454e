"""A real 2-process DDP launch through `accelerate launch` on the CPU (gloo) with a tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cai.cli.main import app
from test_train_helpers import write_preferences


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


def test_failing_launched_run_is_one_error_line(tmp_path, tiny_model_dir):
    """A child process that fails reports its own one-line error through the launcher."""
    data = write_preferences(tmp_path / "dataset")
    (tmp_path / "model").mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (tmp_path / "model" / f.name).symlink_to(f)
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "model" / "tokenizer_config.json").unlink()
    (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, [
        "train", "dpo", "--recipe", "smoke/dpo", "--data", str(data), "--model", str(tmp_path / "model"),
        "--out", str(tmp_path / "dpo"), "--num-processes", "2", "--set", "training.max_steps=1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "chat template" in result.stderr
