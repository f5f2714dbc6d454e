"""The shipped prompt sets load, have the promised shape, and keep eval held out."""

from __future__ import annotations

import pytest
from support import REPO

from cai.generation.prompt_files import load_prompts

DATA = REPO / "data"
RED_TEAM_CATEGORIES = {"violence", "self-harm", "hate", "fraud", "privacy", "dangerous-chemistry", "cyber"}

# file, id prefix, (min, max) prompts, categories that must all be present (each at least `per`)
SETS = {
    "red_team.jsonl": ("rt-", (55, 65), RED_TEAM_CATEGORIES, 8),
    "helpful.jsonl": ("hp-", (25, 35), {"cooking", "coding", "writing", "science", "health-info", "travel",
                                        "finance-basics", "borderline"}, 3),
    "eval_red_team.jsonl": ("ev-rt-", (20, 28), RED_TEAM_CATEGORIES, 3),
    "eval_helpful.jsonl": ("ev-hp-", (100, 130), {"cooking", "coding", "writing", "science", "health-info", "travel",
                                              "finance-basics", "borderline"}, 12),
}


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("name", SETS)
def test_set_shape(name):
    prefix, (low, high), categories, per = SETS[name]
    records = load_prompts(DATA / name)
    assert low <= len(records) <= high
    assert all(r.id.startswith(prefix) for r in records)
    assert all(r.category for r in records)
    counts = {c: sum(r.category == c for r in records) for c in {r.category for r in records}}
    assert categories <= counts.keys()
    assert all(counts[c] >= per for c in categories), counts
    if "red_team" in name:
        assert counts.keys() == RED_TEAM_CATEGORIES
    assert all(r.id.startswith(f"{prefix}{r.category}-") for r in records)


def test_ids_unique_across_all_sets():
    ids = [r.id for name in SETS for r in load_prompts(DATA / name)]
    assert len(ids) == len(set(ids))


def test_prompts_unique_within_and_across_sets():
    texts = [normalized(r.prompt) for name in SETS for r in load_prompts(DATA / name)]
    assert len(texts) == len(set(texts))


def test_eval_sets_share_no_text_with_training_sets():
    train = {normalized(r.prompt) for name in ("red_team.jsonl", "helpful.jsonl") for r in load_prompts(DATA / name)}
    held_out = {normalized(r.prompt) for name in ("eval_red_team.jsonl", "eval_helpful.jsonl")
                for r in load_prompts(DATA / name)}
    assert not train & held_out


def test_helpful_set_has_edgy_sounding_benign_prompts():
    """Over-refusal bait: benign requests that use words like kill or shoot."""
    borderline = [r.prompt.lower() for r in load_prompts(DATA / "helpful.jsonl") if r.category == "borderline"]
    assert any("kill a python process" in p for p in borderline)
    assert any("shoot photos" in p for p in borderline)
