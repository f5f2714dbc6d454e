"""`cai data pairs` as a job: records -> pairs -> quality rules -> safety rules -> judge -> dataset.

Every dropped pair is written to `dataset/dropped.jsonl` with its reason and the
evidence, so `cai data audit` and `cai report` can show what went and why.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cai.errors import CaiError
from cai.generation.store import RunStore
from cai.preferences.strategies import STRATEGIES, PairRules, QualityFilter, final_vs_initial, pairs_from_record
from cai.safety.filter import SafetyRules, apply_rules, score_rows

VERIFY = ("none", "judge")
JUDGE_DISAGREES = "judge disagrees"


@dataclass
class PairsConfig:
    run: str
    strategy: str = "final-vs-initial"
    out: str | None = None                   # default: RUN/dataset
    filter: bool = True
    rules: SafetyRules = field(default_factory=SafetyRules)
    pair_rules: PairRules = field(default_factory=PairRules)
    test_share: float = 0.1
    seed: int = 0
    feedback_margin: float = 0.1             # ai-feedback: keep pairs with |label - 0.5| >= margin
    feedback_model: str | None = None        # judge of ai-feedback and --verify judge (default: the run's model)
    feedback_engine: str | None = None       # default: the run's engine (transformers for a server run)
    verify: str = "none"                     # judge: keep pairs the judge prefers by verify_margin
    verify_margin: float = 0.1


@contextmanager
def _judge(cfg: PairsConfig, manifest: dict):
    """The feedback model as a loaded engine (the run's model unless another is given)."""
    from cai.engines.registry import create_engine
    from cai.models import resolve_model

    name = cfg.feedback_engine or manifest.get("engine") or "transformers"
    if name == "openai" and not cfg.feedback_engine:
        name = "transformers"          # a server's replies carry no label log-probabilities
    ref = resolve_model(cfg.feedback_model or manifest["model"].get("path"))
    engine = create_engine(name, ref.path)
    engine.load()
    try:
        yield engine
    finally:
        engine.close()


def _batched(rows: list, size: int = 16):
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _ai_feedback_rows(records: list[dict], cfg: PairsConfig, manifest: dict, sources, drop) -> list[dict]:
    """Candidate pairs (final vs initial), oriented and kept by the judge's soft label."""
    from cai.preferences.feedback import preference_labels

    candidates = [row for r in records for row in final_vs_initial(r)]
    labels = []
    with _judge(cfg, manifest) as engine:
        for batch in _batched(candidates):
            labels += preference_labels(
                engine, sources.templates, sources.constitution,
                [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in batch],
                seed=cfg.seed, keys=[r["pair_id"] for r in batch])
    rows = []
    for row, judged in zip(candidates, labels):
        if abs(judged["label"] - 0.5) < cfg.feedback_margin:
            drop(row, "ai-feedback below margin", f"label {judged['label']:.2f}")
            continue
        if judged["label"] < 0.5:      # the judge prefers the first answer: swap
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
            row["chosen_truncated"], row["rejected_truncated"] = row["rejected_truncated"], row["chosen_truncated"]
            row["messages"] = row["prompt"] + row["chosen"]
            row["critiques"] = []      # the critiques were written about the new chosen, not from it
        row["strategy"] = "ai-feedback"
        row["pair_id"] = row["pair_id"].replace("final-vs-initial", "ai-feedback")
        row["feedback_label"] = max(judged["label"], 1 - judged["label"])
        row["feedback_principle"] = judged["principle_id"]
        rows.append(row)
    return rows


def verify_with_judge(rows: list[dict], cfg: PairsConfig, manifest: dict, sources, drop) -> list[dict]:
    """Keep the pairs whose judge label (`judge_preference`, P(chosen better)) is at least 0.5 + margin."""
    from cai.preferences.feedback import pair_preferences

    with _judge(cfg, manifest) as engine:
        for batch in _batched(rows):
            for row, p in zip(batch, pair_preferences(engine, sources.templates, sources.constitution, batch)):
                row["judge_preference"] = p
    kept = []
    for row in rows:
        p = row["judge_preference"]
        if p is not None and p < 0.5 + cfg.verify_margin:
            drop(row, JUDGE_DISAGREES, f"P(chosen better) {p:.2f}")
        else:
            kept.append(row)
    return kept


def build_dataset(cfg: PairsConfig, *, reporter=None) -> dict:
    """Run the whole pairs job and return counts for the summary."""
    from cai.generation.snapshot import run_sources
    from cai.preferences.export import write_dataset
    from cai.preferences.quality import CopySources

    if cfg.strategy not in STRATEGIES:
        raise CaiError(f"--strategy: unknown strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if cfg.verify not in VERIFY:
        raise CaiError(f"--verify: unknown check {cfg.verify!r}; choose one of {', '.join(VERIFY)}")
    if cfg.verify == "judge" and cfg.strategy == "ai-feedback":
        raise CaiError("--verify judge: ai-feedback pairs are already chosen by the judge; use another --strategy")
    store = RunStore(cfg.run)
    manifest = store.read_manifest()
    if manifest is None:
        raise CaiError(f"{cfg.run}: not a cai run (no manifest.json); run `cai generate` first")
    records = list(store.iter_records())
    if not records:
        raise CaiError(f"{cfg.run}: no generation records yet")
    sources = run_sources(store.dir, manifest)
    quality = cfg.pair_rules.quality

    dropped: Counter = Counter()
    dropped_rows: list[dict] = []

    def drop(row: dict, reason: str, detail: str = "") -> None:
        dropped[reason] += 1
        dropped_rows.append({**row, "drop_reason": reason, "drop_detail": detail})

    if cfg.strategy == "ai-feedback":
        candidates = _ai_feedback_rows(records, cfg, manifest, sources, drop)
    else:
        candidates = [row for r in records for row in pairs_from_record(r, cfg.strategy)]
    n_candidates = len(candidates) + sum(dropped.values())
    if quality.off_topic.enabled and quality.off_topic.scorer == "embedding":
        from cai.safety.embedding import add_prompt_similarity

        add_prompt_similarity(candidates, quality.off_topic.scorer_options)
    copy_sources = (CopySources.from_constitution(sources.constitution, sources.templates,
                                                  quality.few_shot_copy.min_words)
                    if quality.few_shot_copy.enabled else None)
    pair_filter = QualityFilter(cfg.pair_rules, seed=cfg.seed, sources=copy_sources, on_drop=drop)
    rows = list(pair_filter(candidates))
    if cfg.filter and rows:
        score_rows(rows, cfg.rules, on_batch=reporter.advance if reporter else None)
        rows, _ = apply_rules(rows, cfg.rules, on_drop=drop)
    if cfg.verify == "judge" and rows:
        rows = verify_with_judge(rows, cfg, manifest, sources, drop)

    out = Path(cfg.out) if cfg.out else store.dir / "dataset"
    counts = write_dataset(rows, out, test_share=cfg.test_share, seed=cfg.seed, dropped_rows=dropped_rows, meta={
        "dropped": dict(dropped), "model": manifest["model"]["name"], "strategy": cfg.strategy,
        "constitution": {**manifest["constitution"], "sha256": manifest["fingerprint"]["constitution_sha256"],
                         "snapshot": sources.path if sources.from_snapshot else None},
        "quality": {name: {**settings, "dropped": dropped.get(name, 0)}
                    for name, settings in quality.summary().items()},
        "verify": {"check": cfg.verify, "margin": cfg.verify_margin, "dropped": dropped.get(JUDGE_DISAGREES, 0)}
        if cfg.verify != "none" else None,
        "command": " ".join(["cai", *sys.argv[1:]]),
    })
    return {"records": len(records), "candidate pairs": n_candidates, "kept pairs": len(rows),
            "dropped": dict(dropped), "splits": counts, "out": str(out), "note": sources.note}
