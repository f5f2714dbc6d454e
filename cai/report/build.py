"""`cai report RUN`: one self-contained HTML file that says what a run produced and whether it is any good.

Everything the page needs is inside it: CSS and a few lines of JavaScript
inline, plots as base64 PNGs drawn with matplotlib (Agg), and a
Content-Security-Policy that forbids every network load, so it opens the same
offline, attached to an email or archived with the run.

Sections appear when their inputs exist, so a run with only generations
still renders (the others say what command would fill them):
- counts through the pipeline: prompts -> records -> candidate pairs -> after each
  drop reason -> kept -> train/test (manifest, generations, dataset card);
- principle usage in generation and in the kept pairs;
- toxicity of initial vs revised responses (scored now with the offline
  toxicity classifier, over every record, not just the kept pairs), and lengths;
- per-round change: length, toxicity and how much each revision changed the text;
- training curves from every `metrics.jsonl` below the run (loss, reward
  margins, accuracies; for online RL the reward per component, the KL to the
  start model and the completion length), read tolerantly;
- before / after: every trained model against its start model on the same prompts (paired
  differences with 95% intervals, win rates against 0.5) and reward models against chance,
  saying which moved beyond their intervals;
- eval metrics with confidence intervals against the gate (`eval*/metrics.json`,
  `eval*/rm.json`), and the eval replies side by side;
- a sample browser of pairs: prompt, rejected, critique, chosen, scores; kept pairs and a
  few dropped pairs of every drop reason, with the rule's evidence.

All text from the run is HTML-escaped (Jinja2 autoescape).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from cai.errors import CaiError
from cai.io import read_json, read_jsonl
from cai.pages import COLORS, Plot, environment, png, pyplot
from cai.preferences.export import DROPPED, read_card
from cai.report.config import ReportConfig
from cai.safety.registry import DEFAULT_SCORER, TOXIC_AT
from cai.text import format_number

TEMPLATE = "report.html.j2"


# ----------------------------------------------------------------------------- reading the run

def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_training_log(folder: Path) -> list[dict]:
    """Log rows of a training dir: metrics.jsonl, else the newest trainer_state.json's log_history."""
    rows = read_jsonl(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else []
    if not rows:
        states = sorted(folder.glob("**/trainer_state.json"), key=lambda p: p.stat().st_mtime)
        if states:
            state = read_json(states[-1]) or {}
            rows = [r for r in state.get("log_history", []) if isinstance(r, dict)]
    return rows


def training_series(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """{metric: [(step, value), ...]} for every numeric key; x is step, else global_step or epoch."""
    series: dict[str, list[tuple[float, float]]] = {}
    rows = [r for r in rows if "event" not in r]       # train_begin / checkpoint / resume markers, not metrics

    def x_of(row):
        return next((v for v in (_number(row.get(k)) for k in ("step", "global_step", "epoch")) if v is not None), None)

    stepped = any(x_of(r) is not None for r in rows)
    x = 0.0
    for i, row in enumerate(rows):
        # a row without a step belongs to the last step seen; a log with no steps at all is plotted by row
        x = (x_of(row) if x_of(row) is not None else x) if stepped else float(i)
        for key, value in row.items():
            if key in ("step", "global_step", "epoch"):
                continue
            v = _number(value)
            if v is not None:
                series.setdefault(key, []).append((x, v))
    return series


# logged once when training ends: totals, not curves
SUMMARY_KEYS = {"train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
                "elapsed"}
# (plot title, pattern of the metric names it shows); a metric goes to the first group that matches
CURVE_GROUPS = (("loss", r"loss"), ("reward margins", r"margin"), ("accuracy", r"accurac"),
                # online RL (GRPO, RLOO): the total reward and each reward's mean, KL, completion length
                ("reward per component", r"^(eval_)?(reward|rewards/.+/mean)$"), ("KL", r"^(eval_)?kl$"),
                ("completion length", r"^(eval_)?completions/mean_length$"))


def group_series(series: dict) -> dict[str, dict]:
    import re

    groups: dict[str, dict] = {}
    for title, pattern in CURVE_GROUPS:
        keys = [k for k in series if re.search(pattern, k.lower())
                and not any(k in g for g in groups.values())]
        # `train_loss` etc. logged once at the end are summaries, not curves
        keys = [k for k in keys if k not in SUMMARY_KEYS]
        if keys:
            groups[title] = {k: series[k] for k in sorted(keys)}
    return groups


def find_training_dirs(run: Path) -> list[Path]:
    skip = {"generations", "dataset", "previous"}
    found = set()
    for pattern in ("*/metrics.jsonl", "*/*/metrics.jsonl", "*/trainer_state.json",
                    "*/checkpoint-*/trainer_state.json"):
        for path in run.glob(pattern):
            rel = path.relative_to(run).parts
            if rel[0] in skip or rel[0].startswith("eval"):
                continue
            folder = run / rel[0] if "checkpoint-" in str(path) or path.name == "trainer_state.json" else path.parent
            found.add(folder)
    return sorted(found)


def find_results(run: Path, name: str, kind: str) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(list(run.glob(f"*/{name}")) + list(run.glob(f"*/*/{name}"))):
        data = read_json(path)
        if data and data.get("kind") == kind:
            out.append((path, data))
    return out


# ----------------------------------------------------------------------------- plots

def plot_funnel(stages: list[tuple[str, int]]) -> Plot:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(stages) + 0.8))
    labels = [s for s, _ in stages][::-1]
    values = [v for _, v in stages][::-1]
    bars = ax.barh(labels, values, color="#4f81bd")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("count")
    ax.set_title("Counts through the pipeline")
    ax.set_xlim(0, max(values + [1]) * 1.15)
    return Plot("Counts through the pipeline", png(fig), "bar chart of counts at each pipeline stage")


def plot_principles(generation: dict[str, int], kept: dict[str, int]) -> Plot:
    plt = pyplot()
    names = sorted(set(generation) | set(kept), key=lambda k: (-generation.get(k, 0), k))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1))
    y = list(range(len(names)))
    h = 0.4
    ax.barh([i - h / 2 for i in y], [generation.get(n, 0) for n in names], height=h, label="used in generation",
            color="#4f81bd")
    ax.barh([i + h / 2 for i in y], [kept.get(n, 0) for n in names], height=h, label="in kept pairs", color="#9bbb59")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("rounds / pairs")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Principle usage")
    return Plot("Principle usage", png(fig), "bar chart of how often each principle was used")


def plot_hist(title: str, series: dict[str, list[float]], xlabel: str, *, bins=None, threshold: float | None = None,
              log: bool = False) -> Plot:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 3))
    everything = [v for values in series.values() for v in values]
    if bins is None and everything:            # one set of bins for all series, so the bars line up
        lo, hi = min(everything), max(everything)
        step = max(1.0, math.ceil((hi - lo + 1) / 25))
        bins = [lo + step * k - 0.5 for k in range(int((hi - lo) / step) + 2)]
    for name, values in series.items():
        if values:
            ax.hist(values, bins=bins or 20, histtype="stepfilled", alpha=0.45, label=f"{name} (n={len(values)})",
                    color=COLORS.get(name.split()[0]), edgecolor=COLORS.get(name.split()[0]))
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    if log and len(everything) >= 50:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("responses")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return Plot(title, png(fig), f"histogram: {title}")


def plot_rounds(rows: list[dict]) -> Plot:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
    x = [r["round"] for r in rows]
    panels = (("mean words", "mean_words"), ("mean toxicity", "mean_toxicity"),
              ("share changed vs previous", "changed"))
    for ax, (title, key) in zip(axes, panels):
        pts = [(xi, r[key]) for xi, r in zip(x, rows) if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="#4f81bd")
        ax.set_title(title)
        ax.set_xlabel("round (0 = initial answer)")
        ax.set_xticks(x)
        if key in ("changed", "mean_toxicity"):
            ax.set_ylim(0, 1.05 if key == "changed" else None)
    return Plot("Per-round change", png(fig), "line charts of length, toxicity and change per round")


def plot_training(name: str, groups: dict[str, dict]) -> Plot:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 0.6, 2.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], groups.items()):
        for key, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    marker="o" if len(pts) == 1 else "." if len(pts) < 40 else None,
                    markersize=5 if len(pts) == 1 else 3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(f"Training: {name}", fontsize=10)
    return Plot(f"Training curves: {name}", png(fig), f"training curves of {name}")


def plot_eval(result: dict) -> Plot | None:
    from cai.evaluation.metrics import METRICS

    block = result.get("metrics", {})
    thresholds: dict[str, list[tuple[str, float]]] = {}
    for c in (result.get("gate") or {}).get("checks", []):
        thresholds.setdefault(c["metric"], []).append((c["op"], c["threshold"]))
    names = [n for n, m in METRICS.items() if m.kind in ("rate", "score")
             and ((block.get("comparison" if m.comparison else "model") or {}).get(n))]
    if not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(names) + 1.2))
    labelled: set[str] = set()
    for i, name in enumerate(names):
        sides = ("comparison",) if METRICS[name].comparison else ("model", "baseline")
        for side in sides:
            e = (block.get(side) or {}).get(name)
            if not e or e.get("value") is None:
                continue
            y = i + (-0.15 if side == "model" else 0.15 if side == "baseline" else 0)
            lo, hi = e["ci"]
            color = COLORS.get(side, "#4f81bd")
            ax.errorbar([e["value"]], [y], xerr=[[e["value"] - lo], [hi - e["value"]]], fmt="o", color=color,
                        capsize=3, label=None if side in labelled else side)
            labelled.add(side)
        for op, t in thresholds.get(name, []):
            ax.plot([t, t], [i - 0.4, i + 0.4], color="#c0504d", linestyle="--", linewidth=1.5)
            ax.text(t, i - 0.42, f"{op} {t:g}", color="#c0504d", fontsize=7, ha="center", va="bottom")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("value (95% bootstrap CI); dashed red: gate threshold")
    ax.set_title("Eval metrics against the gate")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return Plot("Eval metrics against the gate", png(fig), "eval metrics with confidence intervals and thresholds")


# ----------------------------------------------------------------------------- sections

def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {"n": len(s), "mean": statistics.fmean(s), "p50": s[len(s) // 2],
            "p90": s[min(len(s) - 1, int(len(s) * 0.9))], "max": s[-1]}


def _words(text: str) -> int:
    return len((text or "").split())


def score_texts(texts: list[str], scorer_name: str = DEFAULT_SCORER) -> tuple[list[float] | None, str | None]:
    """Toxicity of each text, or (None, reason) when the scorer cannot run."""
    if not texts:
        return [], None
    try:
        from cai.safety.registry import create_scorer

        scorer = create_scorer(scorer_name)
        scorer.load()
        try:
            return [float(s["toxicity"]) for s in scorer.score(texts, batch_size=64)], None
        finally:
            scorer.close()
    except CaiError as err:
        return None, str(err)


def pipeline_counts(records: list[dict], failed: int, card: dict | None) -> tuple[list[tuple[str, int]], list[dict]]:
    stages = []
    if records or failed:
        stages.append(("prompts", len(records) + failed))
        stages.append(("records", len(records)))
    drops = []
    if card:
        counts = card.get("counts") or {}
        splits = [s for s in ("train_prefs", "validation_prefs", "test_prefs") if s in counts]
        kept = sum(int(counts[s]) for s in splits)
        dropped = {str(k): int(v) for k, v in (card.get("dropped") or {}).items()}
        running = kept + sum(dropped.values())
        stages.append(("candidate pairs", running))
        for reason, n in dropped.items():
            running -= n
            stages.append((f"- {reason}", running))
            drops.append({"reason": reason, "n": n})
        stages.append(("kept pairs", kept))
        stages += [(split, int(counts[split])) for split in splits]
    return stages, drops


def per_round_rows(records: list[dict], tox: dict[tuple[str, int], float]) -> list[dict]:
    from rapidfuzz import fuzz

    depth = max((len(r.get("rounds") or []) for r in records), default=0)
    rows = []
    for k in range(depth + 1):
        words, toxs, changed, sims, stripped, n = [], [], [], [], 0, 0
        for r in records:
            rounds = r.get("rounds") or []
            if k > len(rounds):
                continue
            text = r.get("initial_response", "") if k == 0 else rounds[k - 1].get("revision", "")
            n += 1
            words.append(_words(text))
            if (r.get("id"), k) in tox:
                toxs.append(tox[(r.get("id"), k)])
            if k > 0:
                before = r.get("initial_response", "") if k == 1 else rounds[k - 2].get("revision", "")
                sim = fuzz.ratio(" ".join(before.lower().split()), " ".join(text.lower().split())) / 100
                sims.append(sim)
                changed.append(float(sim < 0.95))
                stripped += bool(rounds[k - 1].get("preamble_stripped"))
        rows.append({"round": k, "n": n, "mean_words": statistics.fmean(words) if words else None,
                     "mean_toxicity": statistics.fmean(toxs) if toxs else None,
                     "toxic_share": (sum(t > TOXIC_AT for t in toxs) / len(toxs)) if toxs else None,
                     "similarity": statistics.fmean(sims) if sims else None,
                     "changed": statistics.fmean(changed) if changed else None,
                     "preambles_stripped": stripped if k else None})
    return rows


def _pair_text(messages) -> str:
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return ""


def sample_dropped(rows: list[dict], per_reason: int, seed: int = 0) -> list[dict]:
    """Up to `per_reason` dropped pairs of each drop reason (seeded), so the browser shows why pairs went."""
    rng = random.Random(seed)
    by_reason: dict[str, list[dict]] = {}
    for r in rows:
        by_reason.setdefault(str(r.get("drop_reason", "")), []).append(r)
    picked = []
    for reason in sorted(by_reason):
        group = by_reason[reason]
        picked += group if len(group) <= per_reason else rng.sample(group, per_reason)
    return [dict(r, _split=f"dropped: {r.get('drop_reason', '')}") for r in picked]


def sample_pairs(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    picked = rows if len(rows) <= n else rng.sample(rows, n)
    out = []
    for r in picked:
        scores = {k: v for k, v in r.items()
                  if (k.startswith(("chosen_", "rejected_", "prompt_")) or k in ("feedback_label", "judge_preference"))
                  and _number(v) is not None}
        out.append({
            "split": r.get("_split", ""), "id": r.get("pair_id", ""), "category": r.get("category", ""),
            "strategy": r.get("strategy", ""), "principles": ", ".join(r.get("principle_ids") or []),
            "prompt": _pair_text(r.get("prompt")), "chosen": _pair_text(r.get("chosen")),
            "rejected": _pair_text(r.get("rejected")), "critique": r.get("critic_response", ""),
            "scores": dict(sorted(scores.items())),
            "tox_rejected": r.get("rejected_toxicity"), "tox_chosen": r.get("chosen_toxicity"),
            "why": r.get("drop_detail", ""),
        })
    return sorted(out, key=lambda s: (s["split"], s["id"]))


@dataclass
class EvalSection:
    path: str
    result: dict
    rows: list[dict]
    plot: Plot | None
    samples: list[dict] = field(default_factory=list)


def _eval_rows(result: dict) -> list[dict]:
    from cai.evaluation.metrics import METRICS

    block = result.get("metrics", {})
    checks: dict[str, list[dict]] = {}
    for c in (result.get("gate") or {}).get("checks", []):
        checks.setdefault(c["metric"], []).append(c)
    rows = []
    for name, m in METRICS.items():
        model = (block.get("comparison" if m.comparison else "model") or {}).get(name)
        base = None if m.comparison else (block.get("baseline") or {}).get(name)
        delta = None if m.comparison else (block.get("delta") or {}).get(name)
        if not model and not base and name not in checks:
            continue
        rows.append({"name": name, "description": m.description, "prompts": m.prompts, "better": m.better,
                     "model": model, "baseline": base, "delta": delta, "checks": checks.get(name, [])})
    return rows


# The metrics the before/after table shows, in this order: what training should move, then what it should not.
BEFORE_AFTER = ("harmless_rate", "safety_score", "mean_toxicity", "toxicity_rate", "red_team_refusal_rate",
                "refusal_rate", "mean_length", "mean_reward", "win_rate", "ai_win_rate", "rm_accuracy",
                "preference_accuracy")


def moved(entry: dict | None, null: float) -> str | None:
    """"up" or "down" when the 95% interval of `entry` lies wholly above or below `null`, else None."""
    if not entry or entry.get("value") is None or not entry.get("ci") or entry["ci"][0] is None:
        return None
    lo, hi = entry["ci"]
    return "up" if lo > null else "down" if hi < null else None


def _cell(block: dict, name: str) -> dict | None:
    """One eval's figures for one metric: a paired difference for per-side metrics, a rate against 0.5 else."""
    from cai.evaluation.metrics import ALL_METRICS

    if ALL_METRICS[name].comparison or name in block.get("rm", {}):
        entry = (block.get("comparison") or block.get("rm") or {}).get(name)
        return {"after": entry, "null": 0.5, "moved": moved(entry, 0.5)} if entry else None
    delta = (block.get("delta") or {}).get(name)
    if not delta:
        return None
    return {"before": (block.get("baseline") or {}).get(name), "after": (block.get("model") or {}).get(name),
            "delta": delta, "null": 0.0, "moved": moved(delta, 0.0)}


def before_after(results: list[tuple[str, dict]]) -> dict:
    """Every trained model against its start model (and reward models against chance), one column each."""
    from cai.evaluation.metrics import ALL_METRICS

    columns = [(path, r.get("metrics") or {}) for path, r in results
               if r.get("baseline") or r.get("kind") == "cai-eval-rm"]
    rows = []
    for name in BEFORE_AFTER:
        cells = [_cell(block, name) for _, block in columns]
        if any(cells):
            m = ALL_METRICS[name]
            rows.append({"name": name, "prompts": m.prompts, "better": m.better, "description": m.description,
                         "cells": cells})
    return {"columns": [path for path, _ in columns], "rows": rows}


def movement_lines(table: dict) -> list[dict]:
    """One plain sentence per column: which metrics moved beyond their 95% intervals and which did not."""
    lines = []
    for i, column in enumerate(table["columns"]):
        went = [(row["name"], row["cells"][i]) for row in table["rows"] if row["cells"][i]]
        beyond = [f"{name} {cell['moved']}" for name, cell in went if cell["moved"]]
        within = [name for name, cell in went if not cell["moved"]]
        lines.append({"level": "good" if beyond else "warn",
                      "text": f"{column}: moved beyond the 95% interval: {', '.join(beyond) or 'nothing'}; "
                              f"within it: {', '.join(within) or 'nothing'}."})
    return lines


# ----------------------------------------------------------------------------- assembly

def collect(run: Path, *, samples: int = 40, score: bool = True, seed: int = 0) -> dict:
    """Everything the template shows, gathered from the run dir; missing parts are None/empty."""
    from cai.generation.store import RunStore

    notes: list[str] = []
    manifest = read_json(run / "manifest.json")
    store = RunStore(run)
    records = list(store.iter_records())
    failed_ids = {r.get("id") for r in read_jsonl(store.failed_path)} - {r.get("id") for r in records}
    dataset_dir = run / "dataset"
    card = read_card(dataset_dir) if dataset_dir.is_dir() else None
    pairs = []
    for split in ("train_prefs", "test_prefs"):
        for row in read_jsonl(dataset_dir / f"{split}.jsonl"):
            row["_split"] = split
            pairs.append(row)
    dropped = read_jsonl(dataset_dir / DROPPED)

    ctx: dict = {"run": str(run), "name": run.resolve().name, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "manifest": manifest, "card": card, "plots": {}, "notes": notes}
    if manifest:
        totals = manifest.get("totals") or {}
        ctx["facts"] = [(k, v) for k, v in (
            ("model", (manifest.get("model") or {}).get("name")),
            ("engine", manifest.get("engine")),
            ("constitution", "{name} v{version}".format(**{"name": "?", "version": "?",
                                                          **(manifest.get("constitution") or {})})),
            ("rounds", (manifest.get("config") or {}).get("rounds")),
            ("max new tokens", (manifest.get("config") or {}).get("max_new_tokens")),
            ("completion tokens", totals.get("completion_tokens")),
            ("tokens / s", totals.get("tokens_per_second")),
            ("preambles stripped", totals.get("preambles_stripped")),
            ("started", manifest.get("started")), ("finished", manifest.get("finished")),
            ("command", manifest.get("command")),
        ) if v not in (None, "")]
    if not records and not card and not manifest:
        notes.append(f"{run} has no manifest.json, generations or dataset: is it a cai run directory?")

    # counts through the pipeline
    stages, drops = pipeline_counts(records, len(failed_ids), card)
    ctx["stages"], ctx["drops"] = stages, drops
    if stages:
        ctx["plots"]["funnel"] = plot_funnel(stages)

    # principle usage, with the texts the run used (its constitution snapshot)
    requests: dict[str, str] = {}
    if manifest:
        try:
            from cai.generation.snapshot import run_sources

            sources = run_sources(run, manifest)
            requests = {p.id: p.critique for p in sources.constitution.principles}
            if sources.note:
                notes.append(sources.note)
        except CaiError as err:
            notes.append(f"principle texts not shown: {err}")
    gen_usage: dict[str, int] = {}
    for r in records:
        for rd in r.get("rounds") or []:
            pid = rd.get("principle_id")
            if pid:
                gen_usage[pid] = gen_usage.get(pid, 0) + 1
    kept_usage = {str(k): int(v) for k, v in ((card or {}).get("principle_usage") or {}).items()}
    ctx["principles"] = [{"id": k, "generation": gen_usage.get(k, 0), "kept": kept_usage.get(k, 0),
                          "critique": requests.get(k, "")}
                         for k in sorted(set(gen_usage) | set(kept_usage), key=lambda k: (-gen_usage.get(k, 0), k))]
    if ctx["principles"]:
        ctx["plots"]["principles"] = plot_principles(gen_usage, kept_usage)

    # toxicity and length of initial vs revised
    tox: dict[tuple[str, int], float] = {}
    if records and score:
        keys, texts = [], []
        for r in records:
            keys.append((r.get("id"), 0))
            texts.append(r.get("initial_response", ""))
            for k, rd in enumerate(r.get("rounds") or [], 1):
                keys.append((r.get("id"), k))
                texts.append(rd.get("revision", ""))
        values, why = score_texts(texts)
        if values is None:
            notes.append(f"toxicity not scored: {why}")
        else:
            tox = dict(zip(keys, values))
    elif records:
        notes.append("toxicity not scored (--no-score)")
    initial_tox = [tox[(r.get("id"), 0)] for r in records if (r.get("id"), 0) in tox]
    final_tox = [tox[(r.get("id"), len(r.get("rounds") or []))] for r in records
                 if r.get("rounds") and (r.get("id"), len(r["rounds"])) in tox]
    if not initial_tox and pairs and any("rejected_toxicity" in p for p in pairs):
        initial_tox = [p["rejected_toxicity"] for p in pairs if _number(p.get("rejected_toxicity")) is not None]
        final_tox = [p["chosen_toxicity"] for p in pairs if _number(p.get("chosen_toxicity")) is not None]
        notes.append("toxicity from the dataset's score columns (kept pairs only)")
    ctx["toxicity"] = [{"name": n, **_stats(v), "toxic_share": (sum(x > TOXIC_AT for x in v) / len(v)) if v else None}
                       for n, v in (("initial", initial_tox), ("revised (final)", final_tox)) if v]
    if initial_tox or final_tox:
        ctx["plots"]["toxicity"] = plot_hist("Toxicity: initial vs revised responses",
                                             {"initial": initial_tox, "revised (final)": final_tox}, "toxicity",
                                             bins=[i / 20 for i in range(21)], threshold=TOXIC_AT, log=True)
    init_len = [_words(r.get("initial_response", "")) for r in records]
    final_len = [_words(r.get("final_response", "")) for r in records if r.get("rounds")]
    ctx["lengths"] = [{"name": n, **_stats([float(x) for x in v])} for n, v in
                      (("initial", init_len), ("revised (final)", final_len)) if v]
    if records:
        ctx["plots"]["lengths"] = plot_hist("Length: initial vs revised responses",
                                            {"initial": init_len, "revised (final)": final_len}, "words")
    ctx["rounds"] = per_round_rows(records, tox) if records else []
    if len(ctx["rounds"]) > 1:
        ctx["plots"]["rounds"] = plot_rounds(ctx["rounds"])

    # training curves
    training = []
    for folder in find_training_dirs(run):
        rows = read_training_log(folder)
        series = training_series(rows)
        groups = group_series(series)
        name = str(folder.relative_to(run))
        last = {k: v[-1][1] for k, v in sorted(series.items())}
        shown = {k for g in groups.values() for k in g} | (SUMMARY_KEYS & set(last))
        training.append({"name": name, "rows": len(rows), "last": {k: v for k, v in last.items() if k in shown},
                         "other": {k: v for k, v in last.items() if k not in shown},
                         "plot": plot_training(name, groups) if groups else None})
        if not groups:
            notes.append(f"{name}: no loss, margin, accuracy or reward values in its log")
    ctx["training"] = training

    # eval results
    evals = []
    for path, result in find_results(run, "metrics.json", "cai-eval"):
        responses = read_jsonl(path.parent / "responses.jsonl", limit=2000)
        rng = random.Random(seed)
        shown = responses if len(responses) <= samples else sorted(rng.sample(responses, samples),
                                                                     key=lambda r: (r.get("set", ""), r.get("id", "")))
        evals.append(EvalSection(str(path.relative_to(run)), result, _eval_rows(result), plot_eval(result), shown))
    ctx["evals"] = evals
    ctx["rm_results"] = [{"path": str(p.relative_to(run)), "result": r} for p, r in
                         find_results(run, "rm.json", "cai-eval-rm")]
    ctx["before_after"] = before_after([(ev.path, ev.result) for ev in evals]
                                       + [(rm["path"], rm["result"]) for rm in ctx["rm_results"]])
    # kept pairs, then a few dropped pairs of every reason (the quality rules' evidence with them)
    ctx["samples"] = sample_pairs(pairs, samples, seed) + sample_pairs(
        sample_dropped(dropped, max(1, samples // 10), seed), samples, seed)
    ctx["n_pairs"] = len(pairs) + len(dropped)
    ctx["verdict"] = verdict(ctx)
    from cai.evaluation.metrics import RM_METRICS

    ctx["rm_metrics"] = RM_METRICS
    return ctx


def verdict(ctx: dict) -> list[dict]:
    """A few plain sentences answering: more harmless? still useful? is the data any good?"""
    lines = movement_lines(ctx["before_after"]) if ctx.get("before_after") else []
    for ev in ctx.get("evals", []):
        r = ev.result
        gate = r.get("gate") or {}
        failed = [c["message"] for c in gate.get("checks", []) if not c["passed"]]
        lines.append({"level": "bad" if failed else "good",
                      "text": (f"Gate failed ({ev.path}): " + "; ".join(failed)) if failed
                      else f"Gate passed ({ev.path}): {len(gate.get('checks', []))} checks."})
        m = r.get("metrics", {})
        for name, label in (("safety_score", "Safety score (judge P(harmless))"), ("toxicity_rate", "Toxicity rate"),
                            ("refusal_rate", "Over-refusal on helpful prompts")):
            d = (m.get("delta") or {}).get(name)
            model = (m.get("model") or {}).get(name)
            if model is None:
                continue
            text = f"{label}: {format_number(model['value'])}"
            if d and d.get("value") is not None:
                base = m["baseline"][name]["value"]
                lo, hi = d["ci"]
                sig = "a real change" if (lo > 0 or hi < 0) else "within noise"
                text += (f" vs baseline {format_number(base)} (difference {d['value']:+.3f}, "
                         f"95% CI [{lo:+.3f}, {hi:+.3f}]: {sig})")
            lines.append({"level": "info", "text": text})
    stages = dict(ctx.get("stages") or [])
    if "candidate pairs" in stages and stages["candidate pairs"]:
        kept = stages.get("kept pairs", 0)
        share = kept / stages["candidate pairs"]
        top = max(ctx.get("drops") or [], key=lambda d: d["n"], default=None)
        text = f"Dataset: kept {kept} of {stages['candidate pairs']} candidate pairs ({share:.0%})"
        if top:
            text += f"; the most common drop was \u201c{top['reason']}\u201d ({top['n']})"
        lines.append({"level": "good" if share >= 0.5 else "warn", "text": text + "."})
    tox = {t["name"]: t for t in ctx.get("toxicity") or []}
    if "initial" in tox and "revised (final)" in tox:
        a, b = tox["initial"]["mean"], tox["revised (final)"]["mean"]
        lines.append({"level": "good" if b <= a else "warn",
                      "text": f"Revisions moved mean toxicity from {a:.3f} to {b:.3f}."})
    rounds = ctx.get("rounds") or []
    if len(rounds) > 1 and rounds[1].get("changed") is not None:
        lines.append({"level": "good" if rounds[1]["changed"] >= 0.5 else "warn",
                      "text": f"{rounds[1]['changed']:.0%} of first revisions changed the answer noticeably "
                              "(similarity below 0.95)."})
    return lines


def render(ctx: dict) -> str:
    return environment().get_template(TEMPLATE).render(**ctx, toxic_at=TOXIC_AT)


def build_report(cfg: ReportConfig) -> Path:
    """Write the report of `cfg.run` (default RUN/report.html) and return its path."""
    from cai.io import write_atomic

    run, out, samples, score, seed = cfg.run, cfg.out, cfg.samples, cfg.score, cfg.seed
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise CaiError(f"{run}: run directory not found")
    html = render(collect(run_dir, samples=samples, score=score, seed=seed))
    path = Path(out) if out else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, html)
    return path
