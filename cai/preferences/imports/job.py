"""`cai data import` as a job: read every part of SOURCE, convert row by row, write for the next step.

The source's own splits are kept: each maps to train, test or skip (`--split-map`,
defaults per format). A part without a split is divided by prompt like `cai data
pairs` does; when no part is a test split, everything is. Rows the format cannot
use are counted per reason and kept in `dropped.jsonl`; a row missing a field of
the format stops the import with one line naming the file, the row and the field.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field

from cai.errors import CaiError, SettingError
from cai.preferences.config import ImportConfig
from cai.preferences.imports.base import RowContext, Skip, SkipPart, Written, content_key

DUPLICATE = "duplicate"


@dataclass
class PartCount:
    """One split of the source: where it went and how many of its rows were read and converted."""

    split: str                          # the source's split name, "(none)" when it has none
    target: str                         # train | test | skip | unsplit
    rows_read: int
    converted: int


@dataclass
class ImportSummary:
    format: str
    source: str                         # what SOURCE resolved to
    output: str                         # pairs | prompts | records
    out: str
    read: int
    kept: int                           # rows written (drops made while writing taken off)
    dropped: dict[str, int]             # reason -> rows
    written: Written
    parts: list[PartCount]
    notes: list[str]


@dataclass
class _Read:
    """What reading the source gave: converted rows (and which are test or unsplit), drops, counts per split."""

    rows: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    unsplit: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    dropped_rows: list[dict] = field(default_factory=list)
    read: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)


def run_import(cfg: ImportConfig) -> ImportSummary:
    """Read, convert and write; a row missing a field of the format stops the import before anything is written."""
    from cai.preferences.imports import importer_class
    from cai.preferences.imports.sources import open_source

    importer = importer_class(cfg.format)(cfg)
    if cfg.score and importer.output != "pairs":
        raise SettingError("score", f"applies to the preference formats; {cfg.format} writes {importer.output}, "
                                    "scored later by `cai data pairs`")
    source = open_source(cfg.source, importer.splits)
    importer.source = source
    notes = list(source.notes)
    mapping = _split_map(source, importer, cfg, notes)
    got = _read(source, importer, cfg, mapping, notes)
    if not any(got.read.values()):
        raise CaiError(f"{cfg.source}: no rows read" + (f" ({'; '.join(notes)})" if notes else ""))

    test_ids = _test_ids(got.test, got.unsplit, cfg) if got.test else None
    parts = [PartCount(split or "(none)", mapping.get(split, "skip") if split else "unsplit", got.read[split],
                       got.converted[split]) for split in sorted(got.read)]
    meta = {"dropped": dict(got.dropped), "strategy": f"import:{cfg.format}",
            "sources": [{"format": cfg.format, "source": cfg.source, **asdict(p)} for p in parts],
            "command": " ".join(["cai", *sys.argv[1:]])}
    written = importer.write(got.rows, test_ids, got.dropped_rows, meta)
    dropped_on_write = sum(meta["dropped"].values()) - sum(got.dropped.values())
    return ImportSummary(format=cfg.format, source=str(source.path), output=importer.output, out=cfg.out,
                         read=sum(got.read.values()), kept=len(got.rows) - dropped_on_write,
                         dropped=meta["dropped"], written=written, parts=parts, notes=notes)


def _split_map(source, importer, cfg: ImportConfig, notes: list[str]) -> dict[str, str]:
    """Source split -> train | test | skip: the format's defaults, then --split-map; unmapped splits are noted."""
    present = sorted({p.split for p in source.parts if p.split is not None})
    for name in cfg.split_targets:
        if name not in present:
            raise SettingError("split_map", f"{name}: {cfg.source} has no split {name!r} "
                                            f"(its splits: {', '.join(present) or 'none'})")
    mapping = {**importer.split_map, **cfg.split_targets}
    unmapped = [s for s in present if s not in mapping]
    if unmapped:
        notes.append(f"split(s) {', '.join(unmapped)} skipped (map them with --split-map NAME=train|test)")
    return mapping


def _read(source, importer, cfg: ImportConfig, mapping: dict[str, str], notes: list[str]) -> _Read:
    """Check and convert every row of the parts to import; Skip counts a row, a bad row stops the import."""
    got = _Read()
    seen: set[str] = set()
    for part in source.parts:
        target = "unsplit" if part.split is None else mapping.get(part.split, "skip")
        if target == "skip":
            continue
        key = part.split or ""
        for index, (where, row) in enumerate(part.rows()):
            if cfg.limit is not None and got.read[key] >= cfg.limit:
                break
            ctx = RowContext(part.label, where, part.split, index, part.folder, part.name)
            try:
                importer.check(row, ctx)
            except SkipPart as why:
                notes.append(f"{part.label}: {why}")
                break
            got.read[key] += 1
            try:
                out = importer.convert(row, ctx)
                if importer.output == "pairs":
                    digest = content_key(out)
                    if digest in seen:
                        raise Skip(DUPLICATE, "the same prompt, chosen and rejected appear earlier")
                    seen.add(digest)
            except Skip as skip:
                got.dropped[skip.reason] += 1
                got.dropped_rows.append({**{f: row[f] for f in importer.fields if f in row},
                                         "pair_id": f"{cfg.format}:{ctx.part_name}:{index}",
                                         "source": f"{part.label}: {where}",
                                         "drop_reason": skip.reason, "drop_detail": skip.detail})
                continue
            got.converted[key] += 1
            got.rows.append(out)
            if target in ("test", "unsplit"):
                (got.test if target == "test" else got.unsplit).append(out)
    return got


def _test_ids(test_rows: list[dict], unsplit_rows: list[dict], cfg: ImportConfig) -> set[str]:
    """The source's test rows, plus a prompt-level share of the rows that came without a split."""
    from cai.preferences.export import split_by_prompt

    _, extra = split_by_prompt(unsplit_rows, cfg.test_share, cfg.seed) if unsplit_rows else ([], [])
    return {r["generation_id"] for r in test_rows + extra}
