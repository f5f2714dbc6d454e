"""`cai data pairs` with its defaults on the data of bench/filter_precision.py: good pairs kept, failures dropped.

- the embedded model's real runs on prompts the rules were not tuned on
  (bench/data/embedded-runs/): every pair is one a careful reader drops
  (bench/data/README.md says what each shows), so none may be kept;
- the hand-written keep-set (bench/data/keep_set.jsonl), as records of a run:
  at most 3% may be dropped, the held-out part counted on its own too;
- the constructed failures (bench/data/failures_constructed.jsonl): each one dropped,
  but for the cases marked as a known limit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import REPO, cli

from cai.io import read_jsonl
from cai.preferences.export import read_card

DATA = REPO / "bench" / "data"
RUNS = sorted(p.parent for p in (DATA / "embedded-runs").glob("*/manifest.json"))


def _kept(dataset: Path) -> list[dict]:
    return read_jsonl(dataset / "train_prefs.jsonl") + read_jsonl(dataset / "test_prefs.jsonl")


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_the_embedded_models_held_out_runs_keep_no_pair(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    cli(["data", "pairs", copy])
    dataset = copy / "dataset"
    assert _kept(dataset) == []
    dropped = {r["generation_id"]: r for r in read_jsonl(dataset / "dropped.jsonl")}
    assert set(dropped) == {r["id"] for r in read_jsonl(run / "labels.jsonl")}
    assert all(r["drop_detail"] or r["drop_reason"] in ("no-op revision", "truncated") for r in dropped.values())


def _as_run(rows: list[dict], out: Path) -> Path:
    """Pairs written as the generation records of a run (answer = rejected, one round revising it into chosen)."""
    run = out / "run"
    shutil.copytree(RUNS[0] / "snapshot", run / "snapshot")
    manifest = json.loads((RUNS[0] / "manifest.json").read_text())
    manifest["model"] = {"name": "hand-written", "path": None}
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "generations").mkdir()
    with open(run / "generations" / "part-00000.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({
                "id": row["generation_id"], "prompt": row["prompt"][0]["content"], "category": row["category"],
                "source": row["source"], "model": row["model"], "initial_response": row["rejected"][0]["content"],
                "initial_finish": "stop", "final_response": row["chosen"][0]["content"],
                "rounds": [{"principle_id": row["principle_ids"][0], "critique_request": "", "revision_request": "",
                            "critique": row["critiques"][0], "revision": row["chosen"][0]["content"],
                            "revision_finish": "stop"}]}) + "\n")
    return run


def test_the_hand_written_keep_set_is_kept(tmp_path):
    rows = read_jsonl(DATA / "keep_set.jsonl")
    run = _as_run(rows, tmp_path)
    cli(["data", "pairs", run])
    kept = {r["generation_id"] for r in _kept(run / "dataset")}
    held_out = [r for r in rows if r["part"] == "held-out"]
    assert len(rows) - len(kept) <= 0.03 * len(rows), read_jsonl(run / "dataset" / "dropped.jsonl")
    assert sum(r["generation_id"] not in kept for r in held_out) <= 0.03 * len(held_out)


def test_every_constructed_failure_is_dropped_with_its_reason(tmp_path):
    rows = read_jsonl(DATA / "failures_constructed.jsonl")
    run = _as_run(rows, tmp_path)
    cli(["data", "pairs", run])
    dropped = {r["generation_id"]: r for r in read_jsonl(run / "dataset" / "dropped.jsonl")}
    for row in rows:
        if row.get("limit"):
            continue
        assert dropped[row["generation_id"]]["drop_reason"] == row["expected"], row["failure"]
    card = read_card(run / "dataset")
    for rule in ("repeated item", "rejected kept", "refusal not improved"):
        assert card["quality_rules"][rule]["dropped"] >= 1 and card["dropped"][rule] >= 1
