"""Held-out checks: eval prompts must not appear among the prompts a model was trained on.

Exact matches are compared after lower-casing and collapsing whitespace;
near duplicates (rapidfuzz ratio >= `near`, default 90) count too, since a
prompt with one word changed is not held out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

NEAR = 90.0


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def find_overlap(eval_prompts: Iterable[str], train_prompts: Iterable[str], *,
                 near: float | None = NEAR) -> list[tuple[str, str]]:
    """(eval prompt, training prompt) pairs that match exactly or nearly; empty when held out."""
    from rapidfuzz import fuzz, process

    train = {normalize(t): t for t in train_prompts}
    keys = list(train)
    hits = []
    for prompt in eval_prompts:
        key = normalize(prompt)
        if key in train:
            hits.append((prompt, train[key]))
        elif near is not None and keys:
            best = process.extractOne(key, keys, scorer=fuzz.ratio, score_cutoff=near)
            if best is not None:
                hits.append((prompt, train[best[0]]))
    return hits


def run_dir_of(path: str | Path, levels: int = 3) -> Path | None:
    """The run directory (holding manifest.json) that contains `path`, if any."""
    here = Path(path).resolve()
    for candidate in [here, *here.parents][:levels + 1]:
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def run_training_prompts(run_dir: str | Path) -> list[str]:
    """Every prompt a run generated from (any of them may be in its training split)."""
    from cai.generation.store import RunStore

    prompts = [r.get("prompt", "") for r in RunStore(run_dir).iter_records()]
    return [p for p in prompts if isinstance(p, str) and p]


def first_turn_prompts(dataset: str | Path, split: str = "test_prefs", *, exclude: Iterable[str] = (),
                       limit: int | None = None, seed: int = 0) -> list[dict]:
    """Eval prompts from a dataset's held-out split: the distinct first user turns of its pairs.

    Rows are `{id, prompt, category}` as prompt files hold them (`cai eval --prompts`). A prompt
    that matches one of `exclude` (the training prompts) exactly or nearly is left out; `limit`
    draws that many, seeded, in the split's order.
    """
    from cai.dataset_folder import split_of
    from cai.generation.prompt_files import stable_id

    by_key: dict[str, dict] = {}
    for row in split_of(dataset, split, columns=("prompt",)):
        turn = next((m["content"] for m in row["prompt"] if m["role"] == "user"), "")
        if turn.strip() and normalize(turn) not in by_key:
            by_key[normalize(turn)] = {"id": stable_id(turn), "prompt": turn, "category": row.get("category") or ""}
    near = {p for p, _ in find_overlap([r["prompt"] for r in by_key.values()], list(exclude))}
    return draw([r for r in by_key.values() if r["prompt"] not in near], limit, seed)


def draw(rows: list, limit: int | None, seed: int = 0) -> list:
    """`limit` of `rows`, seeded, kept in their order (all of them when `limit` is None or larger)."""
    import random

    if limit is None or limit >= len(rows):
        return rows
    keep = set(random.Random(seed).sample(range(len(rows)), limit))
    return [r for i, r in enumerate(rows) if i in keep]
