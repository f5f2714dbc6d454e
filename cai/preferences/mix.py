"""`cai data mix A B ... --weights 0.85,0.15`: one preference dataset from several, by weight.

The alignment-handbook pattern: CAI pairs mixed with a helpfulness set, so a model
trained on refusals keeps being useful. Weights are shares of the mixed train
split: the mix is as large as it can be without repeating a row (a source with
weight w and n train rows allows n / w rows in all), and each source contributes
its share, sampled with the seed. Test splits are never sampled or mixed into
training: every source's test rows go to the test split whole, and a train row
whose prompt is a test prompt of any source is dropped. The card lists the sources.

Each source is a dataset on disk (a cai export, a `save_to_disk` DatasetDict, a
folder of split files or a cached dataset id); its `train_prefs` (or `train`) and
`test_prefs` (or `test`) splits are read. Rows may be in TRL's explicit-prompt form
(cai's) or carry the prompt inside `chosen`/`rejected` (implicit form, as in
HuggingFaceH4/ultrafeedback_binarized); both become cai's form.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from cai.errors import CaiError, located
from cai.preferences.config import MixConfig
from cai.preferences.imports.base import RowContext, Skip, get, messages, pair_row, split_shared_prefix

TRAIN_SPLITS = ("train_prefs", "train")
TEST_SPLITS = ("test_prefs", "test")
KEPT = ("category", "strategy", "model")


@dataclass
class MixSource:
    """One mixed dataset: its share of the train split and the rows it gave."""

    name: str
    path: str
    weight: float                       # share of the mixed train split
    train_rows: int                     # train rows it has (after dropping test-prompt leaks)
    train_used: int                     # of them sampled into the mix
    test_rows: int                      # all go to the test split


@dataclass
class MixSummary:
    out: str
    splits: dict[str, int]
    sources: list[MixSource]
    dropped: dict[str, int]
    notes: list[str]


@dataclass
class _Loaded:
    name: str
    path: str
    train: list[dict]
    test: list[dict]


def mix_datasets(cfg: MixConfig) -> MixSummary:
    """Write the mixed dataset to cfg.out; return the split counts and the per-source figures."""
    from cai.preferences.export import TEST_PROMPT_IN_TRAIN, drop_leaks, prompt_key, write_dataset

    notes: list[str] = []
    dropped: Counter = Counter()
    loaded = [_load(path, _name(path, i, cfg.datasets), notes, dropped) for i, path in enumerate(cfg.datasets)]
    # Leaks are removed before sampling, so the mix keeps the shares it promises.
    test_prompts = {prompt_key(r) for src in loaded for r in src.test}
    dropped_rows = []
    for src in loaded:
        src.train, leaked = drop_leaks(src.train, test_prompts)
        if leaked:
            dropped[TEST_PROMPT_IN_TRAIN] += len(leaked)
            dropped_rows += [{**r, "drop_reason": TEST_PROMPT_IN_TRAIN, "drop_detail": ""} for r in leaked]
        if not src.train:
            raise CaiError(f"{src.path}: no train rows to mix (splits read: {', '.join(TRAIN_SPLITS)})")
    sizes = [len(src.train) for src in loaded]
    shares = cfg.shares or [n / sum(sizes) for n in sizes]
    total = min(n / s for n, s in zip(sizes, shares))
    takes = [min(n, round(s * total)) for n, s in zip(sizes, shares)]
    train: list[dict] = []
    for i, (src, take) in enumerate(zip(loaded, takes)):
        train += random.Random(f"{cfg.seed}:{i}:{src.name}").sample(src.train, take)
    random.Random(cfg.seed).shuffle(train)
    test = [row for src in loaded for row in src.test]
    rows = _common_columns(train + test)
    sources = [MixSource(src.name, src.path, round(share, 4), len(src.train), take, len(src.test))
               for src, share, take in zip(loaded, shares, takes)]
    counts = write_dataset(rows, cfg.out, test_ids={r["generation_id"] for r in test}, seed=cfg.seed,
                           dropped_rows=[{k: v for k, v in r.items() if k != "scores"} for r in dropped_rows], meta={
        "pretty_name": "cai preference mix", "strategy": "mix", "sources": [asdict(src) for src in sources],
        "dropped": dict(dropped),
        "model": ", ".join(sorted({r["model"] for r in rows if r["model"]})),
        "description": ("Preference pairs mixed from the sources below: each contributes its weight's share\n"
                        "of the train split (sampled with the seed); test rows are kept whole and apart."),
        "command": " ".join(["cai", *sys.argv[1:]])})
    return MixSummary(out=cfg.out, splits=counts, sources=sources, dropped=dict(dropped), notes=notes)


def _name(path: str, i: int, paths: list[str]) -> str:
    name = Path(path).name or path
    if name in ("dataset", "hf"):
        name = Path(path).resolve().parent.name
    return name if sum(Path(p).name == Path(path).name for p in paths) == 1 else f"{name}-{i + 1}"


def _load(path: str, name: str, notes: list[str], dropped: Counter) -> _Loaded:
    from cai.preferences.imports.sources import open_source

    source = open_source(path, (*TRAIN_SPLITS, *TEST_SPLITS, "train_sft", "test_sft"))
    notes += source.notes
    by_split: dict[str, list] = {}
    for part in source.parts:
        by_split.setdefault(part.split or "", []).append(part)
    train_split = next((s for s in TRAIN_SPLITS if s in by_split), None)
    test_split = next((s for s in TEST_SPLITS if s in by_split), None)
    if train_split is None and list(by_split) == [""]:
        train_split = ""
        notes.append(f"{path}: no splits: every row is mixed into train")
    if train_split is None:
        raise CaiError(f"{path}: no train split to mix (it has: {', '.join(s or '(none)' for s in by_split)}; "
                       f"expected {' or '.join(TRAIN_SPLITS)})")
    out = {}
    for kind, split in (("train", train_split), ("test", test_split)):
        rows = []
        for part in by_split.get(split, []) if split is not None else []:
            for index, (where, row) in enumerate(part.rows()):
                try:
                    rows.append(_row(row, RowContext(part.label, where, part.split, index), name, f"{kind}{len(rows)}"))
                except Skip as skip:
                    dropped[f"{name}: {skip.reason}"] += 1
        out[kind] = rows
    return _Loaded(name, path, out["train"], out["test"])


def _row(row: dict, ctx: RowContext, name: str, n: str) -> dict:
    """A source row in cai's form, namespaced by its source so ids never collide across sources."""
    for field in ("chosen", "rejected"):
        if field not in row:
            raise located(ctx.label, ctx.where, f"{field}: missing (a preference row has chosen and rejected, and a "
                                                f"prompt unless chosen holds the conversation; this row has: "
                                                f"{', '.join(row)})")
    chosen = messages(row["chosen"], "assistant", "chosen", ctx)
    rejected = messages(row["rejected"], "assistant", "rejected", ctx)
    if len(chosen) > 1 or len(rejected) > 1 or "prompt" not in row:
        prompt, chosen_text, rejected_text = split_shared_prefix(chosen, rejected)
    else:
        prompt = messages(row["prompt"], "user", "prompt", ctx)
        chosen_text, rejected_text = chosen[-1]["content"], rejected[-1]["content"]
    local = get(row, "pair_id")
    pair_id = f"{name}:{local if isinstance(local, str) and local else n}"
    gid = get(row, "generation_id")
    principles = get(row, "principle_ids")
    out = pair_row(pair_id, prompt, chosen_text, rejected_text, source=name,
                   principle_ids=[p for p in principles if isinstance(p, str)] if isinstance(principles, list) else [],
                   **{k: row[k] if isinstance(row.get(k), str) else "" for k in KEPT})
    out["generation_id"] = f"{name}:{gid}" if isinstance(gid, str) and gid else pair_id
    out["scores"] = {k: float(v) for k, v in row.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k.endswith(("toxicity", "bias"))}
    return out


def _common_columns(rows: list[dict]) -> list[dict]:
    """Score columns every row has are kept as columns; the rest are left out (a column needs a value in every row)."""
    common = set.intersection(*(set(r["scores"]) for r in rows)) if rows else set()
    return [{**{k: v for k, v in r.items() if k != "scores"}, **{k: r["scores"][k] for k in sorted(common)}}
            for r in rows]
