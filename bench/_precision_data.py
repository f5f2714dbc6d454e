"""The data the precision benches read: the hand-written keep-set, paraphrase pairs, HH-RLHF, failures.

- bench/data/keep_set.jsonl: 80 pairs a careful reader keeps, written by hand in the style of a
  model that revises well (see bench/data/README.md); `part` is `calibration` or `held-out`.
- bench/data/toxicity_paraphrases.jsonl: 40 hand-written pairs of harmless texts saying the same
  thing in other words, for the toxicity classifier's spread.
- data/hh-rlhf/harmless-base-test.jsonl.gz: real human-preference pairs, imported with
  `cai data import hh-rlhf` as a user would.
- bench/data/failures_constructed.jsonl and bench/data/embedded-runs/: pairs a careful reader drops
  (constructed cases and the embedded model's real failures), each with the failure class it shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
HH_RLHF = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def keep_set(part: str | None = None) -> list[dict]:
    """The hand-written keep-set, or its `calibration` / `held-out` part."""
    from cai.io import read_jsonl

    rows = read_jsonl(DATA / "keep_set.jsonl")
    return [r for r in rows if part is None or r["part"] == part]


def paraphrases() -> list[dict]:
    from cai.io import read_jsonl

    return read_jsonl(DATA / "toxicity_paraphrases.jsonl")


def constructed_failures() -> list[dict]:
    """Hand-written pairs a careful reader drops: `failure` is the class, `expected` the drop reason."""
    from cai.io import read_jsonl

    return read_jsonl(DATA / "failures_constructed.jsonl")


def hh_rlhf_pairs() -> list[dict]:
    """The HH-RLHF harmless-base test split in cai's pair format, through `cai data import hh-rlhf`."""
    from cai.io import read_jsonl
    from cai.preferences.config import ImportConfig
    from cai.preferences.imports.job import run_import

    with tempfile.TemporaryDirectory() as tmp:
        run_import(ImportConfig(format="hh-rlhf", source=str(HH_RLHF), out=tmp))
        rows = read_jsonl(Path(tmp) / "train_prefs.jsonl") + read_jsonl(Path(tmp) / "test_prefs.jsonl")
    for row in rows:
        row.setdefault("chosen_truncated", False)
        row.setdefault("rejected_truncated", False)
    return rows


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (the value at rank ceil(q * n))."""
    import math

    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]
