"""Every `cai data import` format ends in a dataset TRL trains on: one DPO step with the smoke recipe each.

The parsing of each format, its drops and its errors are tested in tests/unit/preferences/test_imports.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support.imports import FIXTURES, cai_harmless_hub, card, rows


def _train_one_dpo_step(cli, data: Path, model: Path, out: Path) -> None:
    """The smoke DPO recipe, one optimizer step, on the export as it is."""
    cli(["train", "dpo", "--recipe", "smoke/dpo", "--data", data, "--model", model, "--out", out,
         "--set", "training.max_steps=1", "--set", "training.save_strategy=no", "--set", "training.max_length=128"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "dpo" and math.isfinite(summary["train_loss"])


@pytest.mark.parametrize(("fmt", "source"), [
    ("hh-rlhf", FIXTURES / "hh-rlhf"),
    ("shp", FIXTURES / "shp"),
    ("webgpt", FIXTURES / "webgpt"),
])
def test_a_pairs_import_trains_one_dpo_step(tmp_path, tiny_model_dir, cli, fmt, source):
    out = tmp_path / fmt
    cli(["data", "import", fmt, source, "--out", out])
    assert rows(out, "train_prefs")
    _train_one_dpo_step(cli, out, tiny_model_dir, tmp_path / "dpo")


def test_cai_harmless_records_become_pairs_that_train(tmp_path, monkeypatch, tiny_model_dir, cli):
    cai_harmless_hub(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    run = tmp_path / "run"
    cli(["data", "import", "cai-harmless", "HuggingFaceH4/cai-conversation-harmless", "--out", run])
    cli(["data", "pairs", run, "--out", run / "dataset"])
    _train_one_dpo_step(cli, run / "dataset", tiny_model_dir, tmp_path / "dpo")


def test_red_team_prompts_are_generated_on_and_train(tmp_path, tiny_model_dir, cli):
    prompts = tmp_path / "rt"
    cli(["data", "import", "hh-rlhf-red-team", FIXTURES / "red-team-attempts", "--out", prompts])
    run = tmp_path / "run"
    cli(["generate", "-c", "constitution/hhh.yaml", "--prompts", prompts / "prompts.jsonl", "--model", tiny_model_dir,
         "--out", run, "--rounds", "1", "--max-new-tokens", "8", "--few-shot", "0", "--no-pairs"])
    cli(["data", "pairs", run, "--no-filter", "--keep-truncated", "--test-share", "0.34", "--out", run / "dataset"])
    assert len(rows(run / "dataset", "train_prefs")) >= 2
    _train_one_dpo_step(cli, run / "dataset", tiny_model_dir, tmp_path / "dpo")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    from support import cli

    root = tmp_path_factory.mktemp("roundtrip")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: how do I do thing {i}?",
                                           "category": "help" if i % 2 else "harm"}) + "\n" for i in range(8)))
    cli(["generate", "-c", "constitution/hhh.yaml", "--prompts", prompts, "--model", tiny_model_dir,
         "--out", root / "run", "--rounds", "2", "--max-new-tokens", "12", "--few-shot", "1", "--no-pairs"])
    return root / "run"


@pytest.mark.parametrize("strategy", ["final-vs-initial", "per-round"])
def test_cai_export_round_trips_through_the_cai_harmless_format(tiny_run, tmp_path, cli, strategy):
    flags = ["--strategy", strategy, "--no-filter", "--keep-truncated", "--test-share", "0.25"]
    cli(["data", "pairs", tiny_run, *flags, "--out", tmp_path / "first"])
    cli(["data", "import", "cai-harmless", tmp_path / "first", "--out", tmp_path / "imported"])
    cli(["data", "pairs", tmp_path / "imported", *flags, "--out", tmp_path / "second"])
    for split in ("train_prefs", "test_prefs", "train_sft", "test_sft"):
        assert rows(tmp_path / "first", split) == rows(tmp_path / "second", split), split
    assert len(rows(tmp_path / "first", "train_prefs")) >= 4 and rows(tmp_path / "first", "test_prefs")
    assert card(tmp_path / "second")["constitution"]["name"] == "hhh"
