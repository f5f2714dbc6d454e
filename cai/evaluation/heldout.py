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
