"""Real trainer runs on a tiny random Llama: sft, dpo, reward and the pipeline (kill + resume).

Each run is a few optimizer steps with a high learning rate, enough for the LoRA adapter to
move the log-probs of the training pairs in the preferred direction.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.train import completion_logp, write_preferences
from typer.testing import CliRunner

from cai.cli.main import app

FAST = ["--set", "training.max_length=128", "--set", "training.learning_rate=1e-3", "--set", "training.logging_steps=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preferences(tmp_path_factory.mktemp("train-run") / "dataset")


@pytest.fixture(scope="module")
def train_rows(data):
    from datasets import load_from_disk

    return list(load_from_disk(str(data / "hf"))["train_prefs"])


def _run(args) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)


def _causal(path, adapter=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def _margin(model, tokenizer, rows) -> float:
    """Mean log p(chosen) - log p(rejected) over the rows."""
    return sum(completion_logp(model, tokenizer, r["prompt"], r["chosen"]) -
               completion_logp(model, tokenizer, r["prompt"], r["rejected"]) for r in rows) / len(rows)


def _outputs_ok(out: Path, kind: str) -> dict:
    for name in ("adapter_model.safetensors", "adapter_config.json", "config.yaml", "metrics.jsonl", "README.md",
                 "summary.json", ".cai-complete", "tokenizer.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == kind and math.isfinite(summary["loss"]) and math.isfinite(summary["train_loss"])
    card = (out / "README.md").read_text()
    assert "base model" in card and "card sha256" in card and "## Metrics" in card
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in row for row in logs)
    return summary


def test_sft_adapter_raises_the_revision_logprob(data, train_rows, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "sft"
    _run(["train", "sft", "--recipe", "smoke/sft", "--data", str(data), "--model", str(tiny_model_dir),
          "--out", str(out), "--set", "training.max_steps=3", "--set", "training.save_strategy=no", *FAST])
    summary = _outputs_ok(out, "sft")
    assert summary["global_step"] == 3 and "eval_loss" in summary
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    row = train_rows[0]
    before = completion_logp(_causal(tiny_model_dir), tokenizer, row["prompt"], row["chosen"])
    after = completion_logp(_causal(tiny_model_dir, out), tokenizer, row["prompt"], row["chosen"])
    assert after > before + 1.0, (before, after)


def test_dpo_adapter_prefers_chosen_and_merges(data, train_rows, tiny_model_dir, tmp_path):
    from ruamel.yaml import YAML
    from transformers import AutoTokenizer

    out = tmp_path / "dpo"
    _run(["train", "dpo", "--recipe", "smoke/dpo", "--data", str(data), "--model", str(tiny_model_dir),
          "--out", str(out), "--set", "training.max_steps=3", "--set", "training.save_strategy=no", "--merge", *FAST])
    summary = _outputs_ok(out, "dpo")
    assert {"train_accuracy", "train_margin", "eval_accuracy", "eval_margin",
            "tokens_per_s", "peak_rss_mib"} <= set(summary)
    config = YAML(typ="safe").load((out / "config.yaml").read_text())
    assert config["run"]["training"]["beta"] == 0.1 and config["run"]["training"]["use_cpu"] is True
    assert config["model"]["path"] == str(tiny_model_dir) and config["data"]["card_sha256"]
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    rows = train_rows[:2]
    base = _margin(_causal(tiny_model_dir), tokenizer, rows)
    tuned_model = _causal(tiny_model_dir, out)
    tuned = _margin(tuned_model, tokenizer, rows)
    assert tuned > base + 1.0, (base, tuned)
    merged = _causal(out / "merged")                       # plain weights, no peft needed
    assert not (out / "merged" / "adapter_config.json").exists()
    assert _margin(merged, tokenizer, rows[:1]) == pytest.approx(_margin(tuned_model, tokenizer, rows[:1]), abs=1e-2)


def test_dpo_other_loss_with_precomputed_reference(data, tiny_model_dir, tmp_path):
    out = tmp_path / "dpo-ipo"
    _run(["train", "dpo", "--recipe", "smoke/dpo", "--data", str(data), "--model", str(tiny_model_dir),
          "--out", str(out), "--set", "training.max_steps=1", "--set", "training.save_strategy=no",
          "--set", "training.loss_type=[ipo]", "--set", "training.precompute_ref_log_probs=true",
          "--set", "data.eval_split=null", *FAST])
    summary = _outputs_ok(out, "dpo")
    assert summary["global_step"] == 1 and "eval_loss" not in summary


def test_reward_model_learns_the_margin_and_reports_test_accuracy(data, train_rows, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    out = tmp_path / "rm"
    _run(["train", "reward", "--recipe", "smoke/reward", "--data", str(data), "--model", str(tiny_model_dir),
          "--out", str(out), "--set", "training.max_steps=4", "--set", "training.save_strategy=no", *FAST])
    summary = _outputs_ok(out, "reward")
    assert 0.0 <= summary["eval_accuracy"] <= 1.0 and "eval_margin" in summary
    tokenizer = AutoTokenizer.from_pretrained(str(out))

    def scores(model, rows):
        margins = []
        for r in rows:
            ids = [tokenizer.apply_chat_template(r["prompt"] + r[side], tokenize=False)
                   for side in ("chosen", "rejected")]
            with torch.no_grad():
                values = [model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item() for text in ids]
            margins.append(values[0] - values[1])
        return sum(margins) / len(margins)

    def load():
        set_seed(42)                                      # the recipe's seed: the same initial score head
        model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model.eval()

    rows = train_rows[:4]
    before = scores(load(), rows)
    after = scores(PeftModel.from_pretrained(load(), str(out)).eval(), rows)
    assert after > before and after > 0, (before, after)


def test_pipeline_sft_then_dpo_from_the_merged_sft_and_rerun_skips(data, train_rows, tiny_model_dir, tmp_path):
    from ruamel.yaml import YAML
    from transformers import AutoTokenizer

    out = tmp_path / "pipe"
    args = ["train", "pipeline", "--recipe", "smoke/pipeline", "--data", str(data), "--model", str(tiny_model_dir),
            "--out", str(out), "--set", "training.save_strategy=no", "--set", "data.eval_split=null",
            "--set", "sft.training.max_steps=1", "--set", "dpo.training.max_steps=2", *FAST]
    _run(args)
    _outputs_ok(out / "sft", "sft")
    _outputs_ok(out / "dpo", "dpo")
    assert (out / "sft" / "merged" / "config.json").is_file()
    config = YAML(typ="safe").load((out / "dpo" / "config.yaml").read_text())
    assert config["model"]["path"] == str((out / "sft" / "merged").resolve())
    tokenizer = AutoTokenizer.from_pretrained(str(out / "dpo"))
    rows = train_rows[:2]
    sft = _margin(_causal(out / "sft" / "merged"), tokenizer, rows)
    dpo = _margin(_causal(out / "sft" / "merged", out / "dpo"), tokenizer, rows)
    assert dpo > sft, (sft, dpo)

    stamp = (out / "dpo" / ".cai-complete").stat().st_mtime_ns
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "already finished" in result.stderr, result.output
    assert (out / "dpo" / ".cai-complete").stat().st_mtime_ns == stamp


def test_pipeline_killed_after_a_checkpoint_resumes_its_global_step(data, tiny_model_dir, tmp_path):
    """kill -9 once a checkpoint is on disk; the rerun continues that stage's global step."""
    pipeline = tmp_path / "pipe.yaml"
    pipeline.write_text("kind: pipeline\nstages:\n  - {name: sft, recipe: smoke/sft}\n")
    out = tmp_path / "pipe"
    cai = str(Path(sys.executable).parent / "cai")
    cmd = [cai, "train", "pipeline", "--recipe", str(pipeline), "--data", str(data), "--model", str(tiny_model_dir),
           "--out", str(out), "--set", "data.eval_split=null", "--set", "training.save_steps=1",
           "--set", "training.max_steps=4", *FAST]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = out / "sft" / "checkpoint-1" / "trainer_state.json"
    deadline = time.time() + 180
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (out / "sft" / ".cai-complete").exists(), "finished before the kill: nothing to resume"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from checkpoint-" in rerun.stderr
    rows = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    resume = next(i for i, row in enumerate(rows) if row.get("event") == "resume")
    resumed_at = rows[resume]["global_step"]
    assert resumed_at >= 1
    begin = next(row for row in rows[resume:] if row.get("event") == "train_begin")
    steps_after = [row["step"] for row in rows[resume:] if "loss" in row]
    assert begin["global_step"] == resumed_at                 # the trainer restored its state
    assert steps_after and steps_after[0] == resumed_at + 1   # continued, not restarted at step 1
    assert json.loads((out / "sft" / "summary.json").read_text())["global_step"] == 4
