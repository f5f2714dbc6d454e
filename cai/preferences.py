"""`cai data pairs` as a job: records -> pairs -> quality rules -> safety rules -> dataset."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cai.errors import CaiError
from cai.pairs import STRATEGIES, PairRules, QualityFilter, final_vs_initial, pairs_from_record
from cai.safety.filter import SafetyRules, apply_rules, score_rows
from cai.store import RunStore


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
    feedback_model: str | None = None        # default: the model that generated the run
    feedback_engine: str = "transformers"


def _ai_feedback_rows(records: list[dict], cfg: PairsConfig, manifest: dict, dropped: Counter) -> list[dict]:
    """Candidate pairs (final vs initial), oriented and kept by the judge's soft label."""
    from cai.constitution import load_constitution
    from cai.engines.registry import create_engine
    from cai.feedback import preference_labels
    from cai.models import resolve_model
    from cai.templates import Templates

    constitution = load_constitution(manifest["constitution"]["path"])
    templates = Templates(manifest["config"].get("prompts_dir"))
    model = cfg.feedback_model or manifest["model"].get("path")
    ref = resolve_model(model)
    candidates = [row for r in records for row in final_vs_initial(r)]
    engine = create_engine(cfg.feedback_engine, ref.path)
    engine.load()
    try:
        labels = []
        for start in range(0, len(candidates), 16):
            batch = candidates[start:start + 16]
            labels += preference_labels(
                engine, templates, constitution,
                [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in batch],
                seed=cfg.seed, keys=[r["pair_id"] for r in batch])
    finally:
        engine.close()
    rows = []
    for row, judged in zip(candidates, labels):
        if abs(judged["label"] - 0.5) < cfg.feedback_margin:
            dropped["ai-feedback below margin"] += 1
            continue
        if judged["label"] < 0.5:      # the judge prefers the first answer: swap
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
            row["chosen_truncated"], row["rejected_truncated"] = row["rejected_truncated"], row["chosen_truncated"]
            row["messages"] = row["prompt"] + row["chosen"]
        row["strategy"] = "ai-feedback"
        row["pair_id"] = row["pair_id"].replace("final-vs-initial", "ai-feedback")
        row["feedback_label"] = max(judged["label"], 1 - judged["label"])
        row["feedback_principle"] = judged["principle_id"]
        rows.append(row)
    return rows


def build_dataset(cfg: PairsConfig, *, reporter=None) -> dict:
    """Run the whole pairs job and return counts for the summary."""
    from cai.dataset import write_dataset

    if cfg.strategy not in STRATEGIES:
        raise CaiError(f"--strategy: unknown strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    store = RunStore(cfg.run)
    manifest = store.read_manifest()
    if manifest is None:
        raise CaiError(f"{cfg.run}: not a cai run (no manifest.json); run `cai generate` first")
    records = list(store.iter_records())
    if not records:
        raise CaiError(f"{cfg.run}: no generation records yet")

    dropped: Counter = Counter()
    if cfg.strategy == "ai-feedback":
        candidates = _ai_feedback_rows(records, cfg, manifest, dropped)
    else:
        candidates = [row for r in records for row in pairs_from_record(r, cfg.strategy)]
    quality = QualityFilter(cfg.pair_rules, seed=cfg.seed)
    rows = list(quality(candidates))
    dropped.update(quality.dropped)
    if cfg.filter and rows:
        score_rows(rows, cfg.rules, on_batch=reporter.advance if reporter else None)
        rows, safety_dropped = apply_rules(rows, cfg.rules)
        dropped.update(safety_dropped)

    out = Path(cfg.out) if cfg.out else store.dir / "dataset"
    counts = write_dataset(rows, out, test_share=cfg.test_share, seed=cfg.seed, meta={
        "dropped": dict(dropped), "model": manifest["model"]["name"], "strategy": cfg.strategy,
        "constitution": {**manifest["constitution"], "sha256": manifest["fingerprint"]["constitution_sha256"]},
        "command": " ".join(["cai", *sys.argv[1:]]),
    })
    return {"records": len(records), "candidate pairs": len(candidates), "kept pairs": len(rows),
            "dropped": dict(dropped), "splits": counts, "out": str(out)}
