"""`cai data split DATASET --out DIR`: a validation split beside train and test, all three by prompt.

Settings (learning rate, steps, thresholds) are chosen on the validation split and
reported on the test split, which they were never compared on. Rows are kept as they
are; the splits are drawn by prompt (a prompt's first turn, normalized, as
`cai data pairs` does), so no prompt of test is in train or validation and no prompt
of validation is in train. By default the dataset's own test split is kept and the
validation prompts come out of train; `--test-share` instead pools every pair and
draws a new test split first (for a source that came as one split, such as
HH-RLHF's test file).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError
from cai.preferences.config import SplitConfig

PAIR_SPLITS = ("train_prefs", "validation_prefs", "test_prefs")


@dataclass
class SplitSummary:
    out: str
    splits: dict[str, int]              # rows per split written
    prompts: dict[str, int]             # distinct prompts per preference split


def read_pairs(dataset: str | Path) -> dict[str, list[dict]]:
    """The preference rows of a cai export per split, every column kept."""
    from cai.dataset_folder import read_splits

    return read_splits(dataset, PAIR_SPLITS)


def split_dataset(cfg: SplitConfig) -> SplitSummary:
    """Write cfg.dataset's pairs to cfg.out as train, validation and test splits; return the counts."""
    from cai.io import read_jsonl
    from cai.preferences.export import DROPPED, prompt_key, read_card, write_dataset

    source = Path(cfg.dataset)
    pairs = read_pairs(source)
    rows = [row for name in PAIR_SPLITS for row in pairs.get(name, [])]
    if not rows:
        raise CaiError(f"{cfg.dataset}: no preference pairs to split")
    test_ids = None
    if cfg.test_share is None:
        test_ids = {row["generation_id"] for row in pairs.get("test_prefs", [])}
        if not test_ids or len(test_ids) == len({row["generation_id"] for row in rows}):
            empty = "test" if not test_ids else "train"
            raise CaiError(f"{cfg.dataset}: its {empty} split is empty; pass --test-share to re-split every pair")
    card = read_card(source) or {}
    meta = {key: card[key] for key in ("pretty_name", "model", "constitution", "strategy", "sources", "dropped",
                                       "quality_rules", "verify") if card.get(key)}
    meta["command"] = " ".join(["cai", *sys.argv[1:]])
    meta["split_note"] = (f"Split by prompt with seed {cfg.seed}: validation holds {cfg.validation_share:g} of the "
                          "prompts, taken from train;\nno prompt of test appears in train or validation, and no "
                          "prompt of validation in train.")
    dropped_rows = read_jsonl(source / DROPPED) if (source / DROPPED).is_file() else None
    counts = write_dataset(rows, cfg.out, test_share=cfg.test_share or 0.0, seed=cfg.seed, meta=meta,
                           test_ids=test_ids, dropped_rows=dropped_rows, validation_share=cfg.validation_share)
    written = read_pairs(cfg.out)
    prompts = {name: len({prompt_key(r) for r in written.get(name, [])}) for name in PAIR_SPLITS}
    return SplitSummary(out=cfg.out, splits=counts, prompts=prompts)

