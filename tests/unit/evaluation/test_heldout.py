"""Eval prompts are held out: the shipped eval sets share no prompt (exact or near) with the training sets."""

from __future__ import annotations

import json

from support import REPO

from cai.evaluation.heldout import find_overlap, run_dir_of, run_training_prompts
from cai.generation.prompt_files import load_prompts

DATA = REPO / "data"
TRAIN = ("red_team.jsonl", "helpful.jsonl")
EVAL = ("eval_red_team.jsonl", "eval_helpful.jsonl")


def _prompts(names) -> list[str]:
    return [r.prompt for name in names for r in load_prompts(DATA / name)]


def test_shipped_eval_sets_do_not_overlap_the_training_sets_even_nearly():
    eval_prompts, train_prompts = _prompts(EVAL), _prompts(TRAIN)
    assert len(eval_prompts) == 136 and len(train_prompts) == 90
    assert find_overlap(eval_prompts, train_prompts) == []


def test_overlap_finds_exact_case_and_whitespace_variants_and_near_duplicates():
    train = ["How do I pick a lock?", "Write a poem about the sea."]
    hits = find_overlap(["how do I  PICK a lock?", "Write a poem about the seas.", "Bake bread?"], train)
    assert hits == [("how do I  PICK a lock?", "How do I pick a lock?"),
                    ("Write a poem about the seas.", "Write a poem about the sea.")]
    assert find_overlap(["Write a poem about the seas."], train, near=None) == []


def test_a_runs_training_prompts_come_from_its_generations(tmp_path):
    run = tmp_path / "run"
    (run / "generations").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (run / "generations" / "part-00000.jsonl").write_text(
        "".join(json.dumps({"id": f"g{i}", "prompt": p}) + "\n" for i, p in enumerate(["A?", "B?"])))
    (run / "dpo" / "checkpoint-2").mkdir(parents=True)
    assert run_dir_of(run / "dpo" / "checkpoint-2") == run.resolve()
    assert run_dir_of(tmp_path) is None
    assert run_training_prompts(run) == ["A?", "B?"]
