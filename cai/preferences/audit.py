"""`cai data audit RUN|DATASET`: what each quality rule flags, refusals by category, length change.

The audit reads what `cai data pairs` wrote (kept splits plus `dropped.jsonl`)
and runs every quality rule on every pair independently, so a rule's count
is not hidden by an earlier rule that dropped the pair first. For a run with
no dataset yet it audits the final-vs-initial candidates. The few-shot-copy
rule compares against the run's constitution snapshot.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cai.errors import CaiError
from cai.preferences.config import AuditConfig
from cai.preferences.quality import RULES, CopySources, Flag, Topics, flags, words
from cai.safety.refusal import is_refusal


@dataclass
class Audit:
    source: str
    kept: list[dict]                 # pairs in the dataset (or every candidate when there is none)
    dropped: list[dict]              # rows of dropped.jsonl, with drop_reason and drop_detail
    rules: list[dict]                # per rule: rule, enabled, flagged, dropped, flagged_kept, examples
    refusals: list[dict]             # per category: category, pairs, refusals, share
    length: dict                     # mean words of chosen and rejected, and the mean change
    notes: list[str] = field(default_factory=list)


def _locate(path: Path) -> tuple[Path | None, Path | None]:
    """(run dir, dataset dir) of a run or a dataset path."""
    if (path / "manifest.json").is_file():
        return path, (path / "dataset" if (path / "dataset" / "README.md").is_file() else None)
    if (path / "README.md").is_file() or (path / "train_prefs.jsonl").is_file():
        return (path.parent if (path.parent / "manifest.json").is_file() else None), path
    raise CaiError(f"{path}: neither a cai run (manifest.json) nor a dataset written by `cai data pairs`")


def _sources(run: Path | None, card: dict | None, notes: list[str]):
    """The constitution and templates the pairs were generated with, or None."""
    from cai.generation.snapshot import run_sources
    from cai.generation.store import RunStore

    if run is not None:
        sources = run_sources(run, RunStore(run).read_manifest() or {})
        if sources.note:
            notes.append(sources.note)
        return sources.constitution, sources.templates
    snap = ((card or {}).get("constitution") or {}).get("snapshot")
    if snap and Path(snap).is_file():
        from cai.constitution import load_constitution
        from cai.generation.templates import Templates

        prompts = Path(snap).parent / "prompts"
        return load_constitution(snap), Templates(prompts if prompts.is_dir() else None)
    notes.append("no constitution snapshot found: the few-shot-copy rule was not run")
    return None, None


def _rows(run: Path | None, dataset: Path | None, notes: list[str]) -> tuple[list[dict], list[dict]]:
    from cai.io import read_jsonl
    from cai.preferences.export import DROPPED

    if dataset is not None:
        kept = [row for split in ("train_prefs", "test_prefs") for row in read_jsonl(dataset / f"{split}.jsonl")]
        if not (dataset / DROPPED).is_file():
            notes.append(f"{dataset} has no {DROPPED}: only the kept pairs are audited")
        return kept, read_jsonl(dataset / DROPPED)
    from cai.generation.store import RunStore
    from cai.preferences.strategies import final_vs_initial

    notes.append("no dataset yet: auditing every final-vs-initial candidate (`cai data pairs` builds the dataset)")
    return [row for record in RunStore(run).iter_records() for row in final_vs_initial(record)], []


def _text(row: dict, side: str) -> str:
    messages = row.get(side) or []
    return messages[-1].get("content", "") if isinstance(messages, list) and messages else ""


def _example(row: dict, rule: str, detail: str, dropped: bool) -> dict:
    critiques = row.get("critiques") or [row.get("critic_response") or ""]
    return {"id": row.get("pair_id", ""), "rule": rule, "detail": detail, "category": row.get("category", ""),
            "status": f"dropped: {row['drop_reason']}" if dropped else "kept",
            "prompt": _text(row, "prompt"), "chosen": _text(row, "chosen"), "rejected": _text(row, "rejected"),
            "critique": critiques[-1] if critiques else ""}


def run_audit(cfg: AuditConfig) -> Audit:
    """Audit the run or dataset at `cfg.path`; `cfg.examples` flagged pairs are kept per rule."""
    from cai.preferences.export import read_card
    from cai.preferences.quality import load_quality_rules

    path, examples = Path(cfg.path), cfg.examples
    if not path.is_dir():
        raise CaiError(f"{path}: not found")
    notes: list[str] = []
    run, dataset = _locate(path)
    card = read_card(dataset) if dataset is not None else None
    rules = load_quality_rules(cfg.rules)
    constitution, templates = _sources(run, card, notes)
    sources = (CopySources.from_constitution(constitution, templates, rules.few_shot_copy.min_words)
               if constitution is not None else None)
    kept, dropped = _rows(run, dataset, notes)
    topics = Topics.from_rows(kept + dropped, constitution)

    flagged: Counter = Counter()
    flagged_kept: Counter = Counter()
    found: dict[str, list[dict]] = {name: [] for name in RULES}
    for is_dropped, rows in ((False, kept), (True, dropped)):
        for row in rows:
            first: dict[str, Flag] = {}
            for flag in flags(row, rules, sources, topics=topics):
                first.setdefault(flag.rule, flag)         # a rule that reads both texts: chosen first
            for flag in first.values():
                flagged[flag.rule] += 1
                flagged_kept[flag.rule] += not is_dropped
                if len(found[flag.rule]) < examples:
                    found[flag.rule].append(_example(row, flag.rule, f"{flag.field}: {flag.detail}", is_dropped))
    drop_counts = Counter(r.get("drop_reason", "") for r in dropped)
    table = [{"rule": name, "enabled": rules.rule(name).enabled, "flagged": flagged[name],
              "flagged_kept": flagged_kept[name], "dropped": drop_counts.get(name, 0), "examples": found[name]}
             for name in RULES]
    # The other drop reasons (truncated, no-op revision, safety, judge, ...) as `cai data pairs` counted them.
    for reason, n in drop_counts.most_common():
        if reason not in RULES:
            rows = [r for r in dropped if r.get("drop_reason") == reason][:examples]
            table.append({"rule": reason, "enabled": True, "flagged": None, "flagged_kept": None, "dropped": n,
                          "examples": [_example(r, reason, r.get("drop_detail", ""), True) for r in rows]})
    return Audit(str(path), kept, dropped, table, refusal_shares(kept), length_change(kept), notes)


def refusal_shares(rows: list[dict]) -> list[dict]:
    """Share of pairs whose chosen is a refusal, per prompt category (and over all)."""
    by: dict[str, list[bool]] = {}
    for row in rows:
        by.setdefault(row.get("category") or "(none)", []).append(is_refusal(_text(row, "chosen")))
    out = [{"category": c, "pairs": len(v), "refusals": sum(v), "share": sum(v) / len(v)}
           for c, v in sorted(by.items())]
    if rows:
        every = [x for v in by.values() for x in v]
        out.append({"category": "all", "pairs": len(every), "refusals": sum(every), "share": sum(every) / len(every)})
    return out


def length_change(rows: list[dict]) -> dict:
    """Mean words of chosen and rejected, and the mean of chosen minus rejected."""
    if not rows:
        return {"pairs": 0}
    chosen = [len(words(_text(r, "chosen"))) for r in rows]
    rejected = [len(words(_text(r, "rejected"))) for r in rows]
    return {"pairs": len(rows), "chosen_words": statistics.fmean(chosen), "rejected_words": statistics.fmean(rejected),
            "change": statistics.fmean(c - r for c, r in zip(chosen, rejected))}


def render_html(audit: Audit) -> str:
    """A small self-contained page in the report's style: the tables and flagged pairs side by side."""
    import time

    from cai.pages import environment

    return environment().get_template("audit.html.j2").render(
        audit=audit, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"), name=Path(audit.source).resolve().name)


def write_html(audit: Audit, out: str | Path) -> Path:
    from cai.io import write_atomic

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_html(audit))
    return path
