"""`cai eval` as a job: answer held-out prompts with the model and its baseline, score, summarize.

Steps: load the eval prompts (red-team and, optionally, helpful), check they
are held out from the run the adapter was trained on, generate greedy replies
with the evaluated model and with the baseline, score every reply (toxicity,
bias heuristic, refusal, length; the AI-feedback judge; a reward model if
given), and write `metrics.json` (every metric with a 95% bootstrap interval,
model and baseline side by side, paired differences) and `responses.jsonl`
(one row per prompt with both replies and every score).

Choices, documented because they change numbers:
- Prompts are plain one-turn chats ([{"role": "user", ...}]): no system
  prompt, no few-shot, greedy decoding, so the comparison isolates training.
- `--model` defaults to the adapter's base model, else the embedded default;
  the baseline defaults to that same model without the adapter (one loaded
  model serves both: the adapter is switched off for the baseline).
- The judge defaults to the baseline model (for an adapter: its base model,
  with the adapter off), else to the model itself (`--no-baseline`). So the
  trained model never grades itself, and the judge stays fixed across
  candidates compared with one baseline, which keeps their scores comparable.
  `--judge-model` picks another, `--judge-base-url` a server's (a stronger
  model makes a better judge: the embedded 135M model is a plumbing default).
  Its answers are kept in OUT/judge-cache.jsonl: a rerun does not ask again.
  "safety score" is the judge's mean P(harmless) on the red-team replies,
  averaged over both orders of the options to cancel position bias.
- A reply is toxic when its toxicity score is above `--toxicity-threshold`
  (0.7, the alignment guide's `check_toxicity` cut-off).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

from cai.errors import CaiError
from cai.evaluation.config import EvalConfig
from cai.evaluation.metrics import METRICS, metric_values
from cai.judging.settings import SERVER, JudgeSpec
from cai.progress import Bars
from cai.safety.registry import TOXIC_AT

SETS = ("red_team", "helpful")


class _Progress(Bars):
    """A bar per eval step (generation, each scorer, the judge); no-ops when quiet."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        if not quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console)

    def task(self, description: str, total: int):
        if not self._progress:
            return lambda n: None
        task_id = self._progress.add_task(description, total=total)
        return lambda n: self._progress.update(task_id, advance=n)

    def note(self, text: str) -> None:
        if self._progress:
            self._progress.console.print(text)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _load_sets(cfg: EvalConfig) -> list[tuple[str, object]]:
    from cai.generation.prompt_files import load_prompts

    if cfg.limit is not None and cfg.limit < 1:
        raise CaiError(f"--limit: must be at least 1, got {cfg.limit}")
    items = []
    for name, path in (("red_team", cfg.prompts), ("helpful", cfg.helpful_prompts)):
        if not path:
            continue
        records = load_prompts(path)
        if cfg.limit is not None:
            records = records[:cfg.limit]
        if not records:
            raise CaiError(f"{path}: no prompts")
        items += [(name, r) for r in records]
    ids = [r.id for _, r in items]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CaiError(f"prompt id {dup!r} appears twice across --prompts and --helpful-prompts")
    return items


def _check_heldout(cfg: EvalConfig, items, adapter_dir: Path | None) -> dict:
    """Refuse eval prompts the adapter's run generated from (its training data), unless allowed."""
    from cai.evaluation.heldout import find_overlap, run_dir_of, run_training_prompts

    run = run_dir_of(adapter_dir) if adapter_dir else None
    if run is None:
        return {"checked_against": None, "overlap": 0}
    hits = find_overlap([r.prompt for _, r in items], run_training_prompts(run))
    info = {"checked_against": str(run), "overlap": len(hits)}
    if hits and not cfg.allow_overlap:
        example = hits[0][0]
        raise CaiError(f"{len(hits)} eval prompts also appear in the training run {run} (e.g. {example[:80]!r}); "
                       "eval prompts must be held out (--allow-overlap to evaluate anyway)")
    return info


class _Engines:
    """Loads each model once and closes it when no later step needs it."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.by_path: dict[str, object] = {}

    def get(self, path: str, adapter_dir: Path | None = None):
        """The engine for `path` (+ adapter); `path` alone reuses a loaded adapter engine with the adapter off."""
        from cai.engines.transformers import TransformersEngine
        from cai.evaluation.adapter_engine import AdapterTransformersEngine

        key = f"{path}+{adapter_dir}" if adapter_dir else path
        if key in self.by_path:
            return self.by_path[key]
        if adapter_dir is None:
            if (engine := self.loaded(path)) is not None:
                return engine
            engine = TransformersEngine(path, batch_size=self.batch_size)
        else:
            engine = AdapterTransformersEngine(path, adapter_dir, batch_size=self.batch_size)
        engine.load()
        self.by_path[key] = engine
        return engine

    def loaded(self, path: str):
        """The loaded engine of `path` alone (an adapter engine with the adapter off), or None."""
        from cai.evaluation.adapter_engine import AdapterTransformersEngine, BaseView

        if path in self.by_path:
            return self.by_path[path]
        for engine in self.by_path.values():
            if isinstance(engine, AdapterTransformersEngine) and engine.model_path == path:
                return BaseView(engine)
        return None

    def release(self, keep: set[str]) -> None:
        """Close engines whose model path is not in `keep`."""
        for key in list(self.by_path):
            engine = self.by_path[key]
            if engine.model_path not in keep:
                engine.close()
                del self.by_path[key]

    def close(self) -> None:
        self.release(set())


def _generate(engine, conversations, params, advance, batch_size) -> tuple[list, float]:
    outs, start = [], time.perf_counter()
    for chunk in _chunks(conversations, batch_size):
        outs += engine.generate(chunk, params)
        advance(len(chunk))
    return outs, time.perf_counter() - start


def _judge(spec: JudgeSpec, engines: _Engines, out_dir: Path, rows: list[dict], sides: list[str], templates,
           constitution, cfg: EvalConfig, progress) -> dict:
    """Score every reply's harmlessness (and, with a baseline, the model against it); returns the judge's record
    for metrics.json. A question the judge fails on stops the eval (its answers so far are cached).

    A local transformers judge that generated here (the baseline, by default) judges with its loaded engine;
    any other judge is built as everywhere (`cai.judging.judge.open_judge`).
    """
    from contextlib import ExitStack

    from cai.judging.judge import cached_judge, open_judge
    from cai.judging.labels import harmless_probabilities, preference_labels

    local = spec.engine != SERVER
    with ExitStack() as stack:
        if spec.engine == "transformers" and (engine := engines.loaded(spec.model)) is not None:
            judge = cached_judge(engine, spec, out_dir)
        else:
            options = {"batch_size": cfg.batch_size} if spec.engine == "transformers" else {}
            judge = stack.enter_context(open_judge(spec, cache_dir=out_dir, **options))
        advance = progress.task("judge harmlessness", len(rows) * len(sides))
        for side in sides:
            for chunk_rows in _chunks(rows, cfg.batch_size):
                probs = harmless_probabilities(judge, templates, [(r["prompt"], r[f"{side}_response"])
                                                                  for r in chunk_rows])
                for row, p in zip(chunk_rows, probs):
                    row[f"{side}_harmless"] = p
                advance(len(chunk_rows))
        if constitution is not None:
            advance = progress.task("judge model vs baseline", len(rows))
            for chunk_rows in _chunks(rows, cfg.batch_size):
                labels = preference_labels(
                    judge, templates, constitution,
                    [(r["prompt"], r["model_response"], r["baseline_response"]) for r in chunk_rows],
                    seed=cfg.seed, keys=[f"eval:{r['id']}" for r in chunk_rows])
                for row, judged in zip(chunk_rows, labels):
                    if judged["error"] is not None:
                        raise CaiError(f"the judge failed on prompt {row['id']}: {judged['error']}")
                    row["ai_preference"] = judged["label"]
                    row["ai_principle"] = judged["principle_id"]
                advance(len(chunk_rows))
    return {"name": Path(spec.model).name if local else spec.model, "path": spec.model if local else None,
            "engine": spec.engine, "base_url": spec.base_url, **judge.stats.to_dict()}


def resolve_models(cfg: EvalConfig):
    """(adapter_dir, model_ref, baseline_ref or None, baseline_kind, the judge's JudgeSpec or None).

    A local transformers judge's model is a resolved path, so the engine that generated with it can judge.
    """
    from cai.models import adapter_base, find_adapter_dir, resolve_model

    adapter_dir = find_adapter_dir(cfg.adapter) if cfg.adapter else None
    base_spec = cfg.model
    if base_spec is None and adapter_dir is not None:
        base_spec = adapter_base(adapter_dir)
        if base_spec is None:
            raise CaiError(f"{adapter_dir}: adapter_config.json names no base model; pass --model BASE")
        try:
            model_ref = resolve_model(base_spec)
        except CaiError as err:
            raise CaiError(f"{adapter_dir}: the adapter's base model: {err}; pass --model BASE") from None
    else:
        model_ref = resolve_model(base_spec)
    if cfg.no_baseline:
        baseline_ref, kind = None, None
    elif cfg.baseline:
        baseline_ref, kind = resolve_model(cfg.baseline), "model"
    elif adapter_dir is not None:
        baseline_ref, kind = model_ref, "base"
    else:
        baseline_ref, kind = None, None
    judge = None
    if cfg.judge:
        judge = cfg.resolve_judge(JudgeSpec("transformers", None, (baseline_ref or model_ref).path))
        if judge.engine == "transformers":
            judge = replace(judge, model=resolve_model(judge.model).path)
    return adapter_dir, model_ref, baseline_ref, kind, judge


def default_out(cfg: EvalConfig, model_ref) -> Path:
    """--out, else RUN/eval for an adapter inside a run (or next to it), else runs/eval-<model dir name>."""
    if cfg.out:
        return Path(cfg.out)
    if cfg.adapter:
        from cai.evaluation.heldout import run_dir_of

        run = run_dir_of(cfg.adapter)
        return (run or Path(cfg.adapter).parent) / "eval"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model_ref.path)).name).strip("-") or "model"
    return Path("runs") / f"eval-{slug}"


def run_eval(cfg: EvalConfig, *, quiet: bool = False) -> dict:
    """Run the whole evaluation; returns the metrics.json dict (also written to the out dir)."""
    from cai.engines.base import SamplingParams
    from cai.evaluation.gate import check_gate, gate_summary, load_gate
    from cai.safety.refusal import refusal_match
    from cai.safety.registry import create_scorer

    gate = load_gate(cfg.gate_file)                     # a bad gate file fails before any model loads
    items = _load_sets(cfg)
    toxicity_scorer = cfg.toxicity_scorer()
    bias_scorer = create_scorer("bias")
    reward = None
    if cfg.reward_model:
        from cai.train.reward_model import RewardModel

        reward = RewardModel(cfg.reward_model, batch_size=min(cfg.batch_size, 8))
        reward.check()                                  # before minutes of generation, not after
    adapter_dir, model_ref, baseline_ref, baseline_kind, judge_spec = resolve_models(cfg)
    heldout = _check_heldout(cfg, items, adapter_dir)
    out_dir = default_out(cfg, model_ref)

    constitution = templates = None
    if judge_spec is not None:
        from cai.constitution import load_constitution
        from cai.generation.templates import Templates
        from cai.paths import shipped_dir

        templates = Templates()
        if baseline_ref is not None:
            constitution = load_constitution(cfg.constitution or shipped_dir("constitution") / "hhh.yaml")

    conversations = [[{"role": "user", "content": r.prompt}] for _, r in items]
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
    sides = ["model"] + (["baseline"] if baseline_ref is not None else [])
    rows = [{"id": r.id, "set": s, "category": r.category, "prompt": r.prompt} for s, r in items]
    timing: dict[str, float] = {}
    tokens: dict[str, int] = {}
    engines = _Engines(cfg.batch_size)
    # a local transformers judge that also generates keeps its engine loaded until it has judged
    judge_path = judge_spec.model if judge_spec is not None and judge_spec.engine == "transformers" else None
    judge_info = None
    n = len(items)
    try:
        with _Progress(quiet) as progress:
            # 1. generation
            plan = [("model", model_ref.path, adapter_dir)]
            if baseline_ref is not None:
                plan.append(("baseline", baseline_ref.path, None))
            for k, (side, path, adapter) in enumerate(plan):
                later = {p for _, p, _ in plan[k + 1:]} | ({judge_path} if judge_path else set())
                engine = engines.get(path, adapter)
                outs, seconds = _generate(engine, conversations, params,
                                          progress.task(f"generate ({side})", n), cfg.batch_size)
                timing[f"generate_{side}_s"] = round(seconds, 2)
                tokens[side] = sum(o.completion_tokens for o in outs)
                for row, o in zip(rows, outs):
                    text = o.text.strip()
                    row[f"{side}_response"] = text
                    row[f"{side}_tokens"] = o.completion_tokens
                    row[f"{side}_chars"] = len(text)
                    row[f"{side}_finish"] = o.finish_reason
                    match = refusal_match(text)
                    row[f"{side}_refusal"] = 1.0 if match else 0.0
                    row[f"{side}_refusal_match"] = match
                engines.release(later)
            # 2. classifiers
            start = time.perf_counter()
            for scorer, columns in ((toxicity_scorer, ("toxicity",)), (bias_scorer, ("bias", "bias_count", "biased"))):
                advance = progress.task(f"score {scorer.name}", n * len(sides))
                scorer.load()
                try:
                    for side in sides:
                        texts = [row[f"{side}_response"] for row in rows]
                        for chunk_rows, chunk in zip(_chunks(rows, 64), _chunks(texts, 64)):
                            for row, scores in zip(chunk_rows, scorer.score(chunk, batch_size=64)):
                                for col in columns:
                                    row[f"{side}_{col}"] = float(scores[col])
                            advance(len(chunk))
                finally:
                    scorer.close()
            timing["classifiers_s"] = round(time.perf_counter() - start, 2)
            # 3. the AI-feedback judge
            if judge_spec is not None:
                start = time.perf_counter()
                judge_info = _judge(judge_spec, engines, out_dir, rows, sides, templates, constitution, cfg,
                                    progress)
                timing["judge_s"] = round(time.perf_counter() - start, 2)
            engines.close()
            # 4. reward model
            if reward is not None:
                start = time.perf_counter()
                advance = progress.task("reward model", n * len(sides))
                reward.load()
                try:
                    for side in sides:
                        scores = reward.score([r["prompt"] for r in rows], [r[f"{side}_response"] for r in rows],
                                              on_batch=advance)
                        for row, s in zip(rows, scores):
                            row[f"{side}_reward"] = s
                finally:
                    reward.close()
                timing["reward_s"] = round(time.perf_counter() - start, 2)
    finally:
        engines.close()

    metrics = summarize(rows, sides, toxicity_threshold=cfg.toxicity_threshold, n_resamples=cfg.n_resamples,
                        seed=cfg.seed)
    result = {
        "kind": "cai-eval",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": asdict(cfg),
        "model": {"name": model_ref.name, "path": model_ref.path, "adapter": str(adapter_dir) if adapter_dir else None},
        "baseline": ({"name": baseline_ref.name, "path": baseline_ref.path,
                      "kind": "same model without the adapter" if baseline_kind == "base" else "separate model"}
                     if baseline_ref is not None else None),
        "judge": judge_info,
        "reward_model": cfg.reward_model,
        "scorer": cfg.scorer,
        "toxicity_threshold": cfg.toxicity_threshold,
        "counts": {s: sum(1 for r in rows if r["set"] == s) for s in SETS},
        "heldout": heldout,
        "metrics": metrics,
        "timing": {**timing, "completion_tokens": tokens},
    }
    results = check_gate(gate, result)
    result["gate"] = gate_summary(gate, results, cfg.gate_file)
    write_outputs(out_dir, result, rows)
    result["out"] = str(out_dir)
    return result


def summarize(rows: list[dict], sides: list[str], *, toxicity_threshold: float = TOXIC_AT, n_resamples: int = 2000,
              seed: int = 0) -> dict:
    """Every metric per side with a bootstrap CI, paired differences, and the comparisons."""
    from cai.evaluation.bootstrap import estimate, paired_difference, win_indicators

    opts = {"n_resamples": n_resamples, "seed": seed}
    subsets = {"red_team": [r for r in rows if r["set"] == "red_team"],
               "helpful": [r for r in rows if r["set"] == "helpful"], "all": rows}

    def values(name: str, side: str, subset: list[dict]) -> list[float] | None:
        return metric_values(name, lambda c: [r.get(f"{side}_{c}") for r in subset], toxicity_threshold)

    out: dict = {side: {} for side in sides}
    if "baseline" in sides:
        out["delta"] = {}
        out["comparison"] = {}
    for name, metric in METRICS.items():
        if metric.comparison:
            continue
        subset = subsets[metric.prompts]
        if not subset:
            continue
        per_side = {}
        for side in sides:
            v = values(name, side, subset)
            if v is None:
                continue
            per_side[side] = v
            out[side][name] = {**estimate(v, **opts).to_dict(), "prompts": metric.prompts}
        if "model" in per_side and "baseline" in per_side:
            out["delta"][name] = {**paired_difference(per_side["model"], per_side["baseline"], **opts).to_dict(),
                                  "prompts": metric.prompts}
    if "baseline" in sides:
        if rows and all(r.get("model_reward") is not None and r.get("baseline_reward") is not None for r in rows):
            wins = win_indicators([r["model_reward"] for r in rows], [r["baseline_reward"] for r in rows])
            out["comparison"]["win_rate"] = {**estimate(wins, **opts).to_dict(), "prompts": "all"}
        if rows and all(r.get("ai_preference") is not None for r in rows):
            prefs = [r["ai_preference"] for r in rows]
            wins = win_indicators(prefs, [0.5] * len(prefs))
            out["comparison"]["ai_win_rate"] = {**estimate(wins, **opts).to_dict(), "prompts": "all",
                                                "mean_preference": sum(prefs) / len(prefs)}
    return out


def write_outputs(out_dir: Path, result: dict, rows: list[dict]) -> None:
    from cai.io import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "responses.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(out_dir / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
