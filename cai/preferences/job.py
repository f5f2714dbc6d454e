"""`cai data pairs` as a job: records -> pairs -> quality rules -> safety rules -> judge -> dataset.

Every dropped pair is written to `dataset/dropped.jsonl` with its reason and the
evidence, so `cai data audit` and `cai report` can show what went and why.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError
from cai.generation.store import RunStore
from cai.judging.judge import JudgeStats
from cai.judging.settings import SERVER, JudgeSpec
from cai.preferences.config import AnnotationsConfig, FilterConfig, PairsConfig, SafetySettings
from cai.preferences.pair_filter import PairRules, QualityFilter
from cai.preferences.strategies import final_vs_initial, pairs_from_record
from cai.safety.filter import SafetyRules, apply_rules, load_rules, score_rows

JUDGE_DISAGREES = "judge disagrees"


@dataclass
class PairsSummary:
    """What `cai data pairs` did: counts through the pipeline and where the dataset went."""

    records: int
    candidates: int
    kept: int
    dropped: dict[str, int]
    splits: dict[str, int]
    out: str
    note: str | None = None
    judge: JudgeStats | None = None     # what the judge did, when it ran


@dataclass
class FilterSummary:
    """What `cai data filter` did."""

    pairs: int
    kept: int
    dropped: dict[str, int]
    splits: dict[str, int]
    out: str


def safety_rules(cfg: SafetySettings) -> SafetyRules:
    """The safety thresholds of a job: its rules file, with its flags on top."""
    return load_rules(cfg.rules, scorer=cfg.scorer, toxicity_max=cfg.toxicity_max)


def pair_rules(cfg: PairsConfig) -> PairRules:
    from cai.preferences.quality import load_quality_rules

    return PairRules(drop_truncated=not cfg.keep_truncated, quality=load_quality_rules(cfg.rules, skip=cfg.skip_rule))


JUDGE_FAILED = "judge failed"
JUDGE_BATCH = 64              # pairs per judge call: a server gets them all at once, up to its concurrency


def run_judge(manifest: dict) -> JudgeSpec:
    """The run's own model on the run's engine: the judge `cai data pairs` uses unless told otherwise."""
    engine = manifest.get("engine") or "transformers"
    if engine == SERVER:
        config = manifest.get("config") or {}
        return JudgeSpec(SERVER, config.get("base_url"), config.get("model") or manifest["model"].get("name"))
    return JudgeSpec(engine, None, manifest["model"].get("path"))


@contextmanager
def _judge(spec: JudgeSpec, cfg: PairsConfig, run_dir: Path, stats: list):
    """The judge as a loaded, cached engine (its answers kept in RUN/judge-cache.jsonl); its counts go to `stats`.
    With `--ray` its calls are spread over Ray replicas of the judge engine."""
    from cai.judging.judge import open_judge

    with open_judge(spec, cache_dir=run_dir, ray=cfg if cfg.ray is not None else None) as judge:
        try:
            yield judge
        finally:
            stats.append(judge.stats)


def _batched(rows: list, size: int = JUDGE_BATCH):
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _ai_feedback_rows(records: list[dict], cfg: PairsConfig, judge, sources, drop, on_judged) -> list[dict]:
    """Candidate pairs (final vs initial), oriented and kept by the judge's soft label."""
    from cai.judging.labels import preference_labels

    candidates = [row for r in records for row in final_vs_initial(r)]
    labels = []
    for batch in _batched(candidates):
        labels += preference_labels(
            judge, sources.templates, sources.constitution,
            [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in batch],
            seed=cfg.seed, keys=[r["pair_id"] for r in batch])
        on_judged(len(batch))
    rows = []
    for row, judged in zip(candidates, labels):
        if judged["error"] is not None:
            drop(row, JUDGE_FAILED, judged["error"])
            continue
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


def verify_with_judge(rows: list[dict], cfg: PairsConfig, judge, sources, drop, on_judged) -> list[dict]:
    """Keep the pairs whose judge label (`judge_preference`, P(chosen better)) is at least 0.5 + margin."""
    from cai.preferences.feedback import pair_preferences

    failed: dict[int, str] = {}
    for start, batch in zip(range(0, len(rows), JUDGE_BATCH), _batched(rows)):
        for i, (row, (p, error)) in enumerate(zip(batch, pair_preferences(judge, sources.templates,
                                                                          sources.constitution, batch))):
            row["judge_preference"] = p
            if error is not None:
                failed[start + i] = error
        on_judged(len(batch))
    kept = []
    for i, row in enumerate(rows):
        p = row["judge_preference"]
        if i in failed:
            drop(row, JUDGE_FAILED, failed[i])
        elif p is not None and p < 0.5 + cfg.verify_margin:
            drop(row, JUDGE_DISAGREES, f"P(chosen better) {p:.2f}")
        else:
            kept.append(row)
    return kept


def build_dataset(cfg: PairsConfig, *, on_scored=None, on_judged=None) -> PairsSummary:
    """Run the whole pairs job; `on_scored(n)` follows the safety scoring, `on_judged(n)` the judge."""
    from cai.generation.snapshot import run_sources
    from cai.preferences.export import TEST_PROMPT_IN_TRAIN, leaked_count, write_dataset
    from cai.preferences.quality import CopySources, Topics

    rules, filter_rules = safety_rules(cfg), pair_rules(cfg)
    store = RunStore(cfg.run)
    manifest = store.read_manifest()
    if manifest is None:
        raise CaiError(f"{cfg.run}: not a cai run (no manifest.json); run `cai generate` first")
    records = list(store.iter_records())
    if not records:
        raise CaiError(f"{cfg.run}: no generation records yet")
    sources = run_sources(store.dir, manifest)
    quality = filter_rules.quality

    dropped: Counter = Counter()
    dropped_rows: list[dict] = []

    def drop(row: dict, reason: str, detail: str = "") -> None:
        dropped[reason] += 1
        dropped_rows.append({**row, "drop_reason": reason, "drop_detail": detail})

    judges = cfg.strategy == "ai-feedback" or cfg.verify == "judge"
    judge_spec = cfg.resolve_judge(run_judge(manifest)) if judges else None      # a bad judge fails before any work
    judge_stats: list[JudgeStats] = []
    on_judged = on_judged or (lambda n: None)
    if cfg.strategy == "ai-feedback":
        with _judge(judge_spec, cfg, store.dir, judge_stats) as judge:
            candidates = _ai_feedback_rows(records, cfg, judge, sources, drop, on_judged)
    else:
        candidates = [row for r in records for row in pairs_from_record(r, cfg.strategy)]
    n_candidates = len(candidates) + sum(dropped.values())
    if quality.off_topic.enabled and quality.off_topic.scorer == "embedding":
        from cai.safety.embedding import add_prompt_similarity

        add_prompt_similarity(candidates, quality.off_topic.scorer_options)
    copy_sources = (CopySources.from_constitution(sources.constitution, sources.templates,
                                                  quality.few_shot_copy.min_words)
                    if quality.few_shot_copy.enabled or quality.rejected_kept.enabled else None)
    topics = Topics.from_rows(candidates, sources.constitution) if quality.off_topic.enabled else None
    pair_filter = QualityFilter(filter_rules, seed=cfg.seed, sources=copy_sources, on_drop=drop, topics=topics)
    rows = list(pair_filter(candidates))
    if cfg.filter and rows:
        score_rows(rows, rules, on_batch=on_scored)
        rows, _ = apply_rules(rows, rules, on_drop=drop)
    if cfg.verify == "judge" and rows:
        with _judge(judge_spec, cfg, store.dir, judge_stats) as judge:
            rows = verify_with_judge(rows, cfg, judge, sources, drop, on_judged)

    out = Path(cfg.out) if cfg.out else store.dir / "dataset"
    # Records imported with their source's test split (`split: test`) stay in the test split.
    held_out = {r["id"] for r in records if r.get("split") == "test"} or None
    counts = write_dataset(rows, out, test_share=cfg.test_share, seed=cfg.seed, dropped_rows=dropped_rows,
                           test_ids=held_out, meta={
        "dropped": dict(dropped), "model": manifest["model"]["name"], "strategy": cfg.strategy,
        "constitution": {**manifest["constitution"], "sha256": manifest["fingerprint"]["constitution_sha256"],
                         "snapshot": sources.path if sources.from_snapshot else None},
        "quality": {name: {**settings, "dropped": dropped.get(name, 0)}
                    for name, settings in quality.summary().items()},
        "verify": {"check": cfg.verify, "margin": cfg.verify_margin, "dropped": dropped.get(JUDGE_DISAGREES, 0),
                   "judge": judge_stats[0].judge if judge_stats else None}
        if cfg.verify != "none" else None,
        "command": " ".join(["cai", *sys.argv[1:]]),
    })
    leaked = leaked_count(rows, counts)
    if leaked:
        dropped[TEST_PROMPT_IN_TRAIN] = leaked
    return PairsSummary(records=len(records), candidates=n_candidates, kept=len(rows) - leaked, dropped=dict(dropped),
                        splits=counts, out=str(out), note=sources.note,
                        judge=judge_stats[0] if judge_stats else None)


def filter_dataset(cfg: FilterConfig, *, on_scored=None) -> FilterSummary:
    """`cai data filter`: validate existing pairs, score them, drop by the safety rules, write a dataset."""
    from cai.preferences.export import write_dataset
    from cai.preferences.validation import iter_rows, row_problems

    rules = safety_rules(cfg)
    rows = []
    for where, row in iter_rows(cfg.path):
        problems = row_problems(row)
        if problems:
            raise CaiError(f"{cfg.path}: {where}: {problems[0]} (run `cai data validate {cfg.path}`)")
        rows.append(dict(row))
    score_rows(rows, rules, on_batch=on_scored)
    dropped_rows: list[dict] = []
    kept, dropped = apply_rules(rows, rules, on_drop=lambda row, why, detail: dropped_rows.append(
        {**row, "drop_reason": why, "drop_detail": detail}))
    counts = write_dataset(kept, cfg.out, test_share=cfg.test_share, seed=cfg.seed, dropped_rows=dropped_rows,
                           meta={"dropped": dict(dropped), "strategy": "filtered", "command": "cai data filter"})
    return FilterSummary(pairs=len(rows), kept=len(kept), dropped=dict(dropped), splits=counts, out=cfg.out)


def import_annotations(cfg: AnnotationsConfig):
    """`cai data import-annotations`: the agreement report, and with `out` the dataset and pairs.jsonl.

    Returns (the import with its report, the split counts or None).
    """
    from cai.preferences.annotations import import_annotations as read_annotations
    from cai.preferences.annotations import write_pairs_jsonl
    from cai.preferences.export import write_dataset

    result = read_annotations(cfg.path, min_seconds=cfg.min_seconds)
    if not cfg.out:
        return result, None
    rows = [{**r, "generation_id": r["item_id"], "category": r.get("category", ""), "principle_ids": [],
             "model": "human"} for r in result.rows]
    counts = write_dataset(rows, cfg.out, test_share=cfg.test_share, seed=cfg.seed,
                           meta={"strategy": "human", "command": f"cai data import-annotations {cfg.path}"})
    write_pairs_jsonl(result.rows, Path(cfg.out) / "pairs.jsonl")
    return result, counts
