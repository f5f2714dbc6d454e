"""From a real (tiny-model) run to a dataset that TRL's trainers take as it is."""

from __future__ import annotations

import json
import math

import pytest
from support import cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("run")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: how do I do thing {i}?"}) + "\n"
                               for i in range(8)))
    cli(["generate", "-c", "constitution/hhh.yaml", "--prompts", str(prompts), "--model", str(tiny_model_dir),
             "--out", str(root / "run"), "--rounds", "2", "--max-new-tokens", "12", "--few-shot", "1"])
    return root / "run"


def test_pairs_command_counts_every_pair_and_scores_columns(tiny_run, tmp_path):
    out = tmp_path / "ds"
    result = cli(["data", "pairs", str(tiny_run), "--strategy", "per-round", "--out", str(out),
                      "--no-filter", "--keep-truncated"])
    assert "16 pairs" in result.output          # 8 records x 2 rounds
    cli(["data", "pairs", str(tiny_run), "--out", str(tmp_path / "filtered"), "--toxicity-max", "0.7",
             "--keep-truncated"])
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "filtered" / "hf"))
    card = (tmp_path / "filtered" / "README.md").read_text()
    kept = len(dd["train_prefs"]) + len(dd["test_prefs"])
    dropped = sum(int(line.split(":")[1]) for line in card.split("dropped:")[1].split("principle_usage")[0].splitlines()
                  if ":" in line)
    assert kept + dropped == 8 and kept > 0
    for row in list(dd["train_prefs"]) + list(dd["test_prefs"]):
        assert {"chosen_toxicity", "rejected_toxicity", "prompt_toxicity", "chosen_biased"} <= set(row)
        assert row["chosen_toxicity"] <= 0.7 and row["chosen_biased"] == 0.0


def test_dpo_and_reward_trainers_take_the_export_as_it_is(tiny_run, tmp_path, tiny_model_dir):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    cli(["data", "pairs", str(tiny_run), "--out", str(tmp_path / "ds"),
         "--no-filter", "--test-share", "0.25", "--keep-truncated"])
    dd = load_from_disk(str(tmp_path / "ds" / "hf"))
    assert len(dd["train_prefs"]) >= 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = dict(per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True, bf16=False,
                  save_strategy="no", logging_steps=1, max_length=256)

    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
                     train_dataset=dd["train_prefs"], processing_class=tokenizer)
    assert math.isfinite(dpo.train().training_loss)

    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    reward = RewardTrainer(model=rm, args=RewardConfig(output_dir=str(tmp_path / "rm"), **common),
                           train_dataset=dd["train_prefs"], processing_class=tokenizer)
    assert math.isfinite(reward.train().training_loss)


def test_ai_feedback_orients_pairs_by_the_judges_label(tiny_run, tmp_path, tiny_model_dir):
    cli(["data", "pairs", str(tiny_run), "--strategy", "ai-feedback", "--feedback-margin", "0",
             "--no-filter", "--out", str(tmp_path / "ds"), "--judge-model", str(tiny_model_dir),
             "--keep-truncated"])
    rows = [json.loads(line) for split in ("train_prefs", "test_prefs")
            for line in (tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    assert all(0.5 <= r["feedback_label"] <= 1.0 and r["strategy"] == "ai-feedback" for r in rows)
    records = {json.loads(line)["id"]: json.loads(line) for p in (tiny_run / "generations").glob("*.jsonl")
               for line in p.read_text().splitlines()}
    for r in rows:
        rec = records[r["generation_id"]]
        assert {r["chosen"][0]["content"], r["rejected"][0]["content"]} == {rec["initial_response"],
                                                                           rec["final_response"]}


def test_feedback_labels_cancel_position_bias(tiny_model_dir):
    """The same text as both options must score exactly 0.5, whatever the model's bias to (A)."""
    from cai.constitution import load_constitution
    from cai.engines.transformers import TransformersEngine
    from cai.generation.templates import Templates
    from cai.judging.labels import preference_labels

    engine = TransformersEngine(tiny_model_dir)
    engine.load()
    labels = preference_labels(engine, Templates(), load_constitution("constitution/hhh.yaml"),
                               [("Q?", "same text", "same text"), ("Q?", "one answer", "another answer")])
    raw = engine.label_logprobs([[{"role": "user", "content": "pick"}]], ["A", "B"])
    engine.close()
    assert labels[0]["label"] == pytest.approx(0.5, abs=1e-9)
    assert 0.0 <= labels[1]["label"] <= 1.0 and labels[1]["principle_id"]
    assert all(lp < 0 for lp in raw[0])
