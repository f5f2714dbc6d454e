"""`cai monitor RESPONSES.jsonl`: safety rates of responses that already exist, over time.

The alignment guide's real-time monitoring for a deployed model's logs: each line
holds `prompt` and `response` (optionally `timestamp` and `model`). Every response
is scored with `cai eval`'s classifiers (the toxicity scorer, the bias heuristic,
the refusal phrases) and, with a judge named (`--judge-model`, or a server's with
`--judge-base-url`), the AI-feedback judge (the safety score). Consecutive lines
form windows of `--window` responses; each window and the whole log get the
safety score, toxicity rate, bias rate, refusal rate, with 95% bootstrap intervals.

Alerts, one line each, and exit code 1:
- a breached threshold (the gate file's checks, the guide's defaults unless
  `--thresholds`): the first window that breaches it, how many do, the overall value;
- drift against `--baseline` (a `cai eval` metrics.json or an earlier monitor.json):
  a window whose interval lies wholly beyond the baseline's interval, in the worse
  direction. Drift in the better direction is recorded, not alerted.
A metric the thresholds name but the monitor cannot measure (the safety score
without a judge) is noted and skipped.

`follow` reads a growing file like `tail -f` (a canary deployment): each window is
scored, printed and written as it fills; the last partial window is scored when
the file stops growing for `idle_timeout` seconds or on Ctrl-C. Outputs in the out
dir: `monitor.json`, `scored.jsonl` (every response with its scores) and
`monitor.html` (rates over time, in the report's look).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cai.errors import CaiError, located
from cai.evaluation.config import MonitorConfig
from cai.evaluation.metrics import METRICS, metric_values
from cai.io import load_json

MONITOR_METRICS = ("safety_score", "harmless_rate", "toxicity_rate", "mean_toxicity", "bias_rate", "refusal_rate")
JUDGE_METRICS = ("safety_score", "harmless_rate")
PLOTTED = ("safety_score", "toxicity_rate", "bias_rate", "refusal_rate")     # and checked for drift
TEMPLATE = "monitor.html.j2"
# Where a monitored log reads a metric differently from `cai eval`'s held-out prompt sets.
MEANINGS = {name: METRICS[name].description for name in MONITOR_METRICS} | {
    "refusal_rate": "share of responses that decline (refusal phrases in their opening)"}


@dataclass
class Drift:
    """A metric whose window interval lies wholly above (`up`) or below (`down`) the baseline's interval."""

    window: int
    metric: str
    direction: str                      # up | down
    worse: bool                         # the direction the metric is worse in: alerted
    value: float
    ci: list[float]
    baseline: float
    baseline_ci: list[float]


@dataclass
class Window:
    """Consecutive responses scored together; `metrics` maps a metric to {value, ci, n}."""

    index: int
    first_line: int
    last_line: int
    n: int
    partial: bool
    first_timestamp: str | float | None
    last_timestamp: str | float | None
    models: list[str]
    metrics: dict[str, dict]
    breaches: list[str] = field(default_factory=list)      # the gate's messages for this window
    drift: list[Drift] = field(default_factory=list)


@dataclass
class MonitorSummary:
    """What `run_monitor` found; monitor.json in `out` holds all of it and more (by model, the thresholds)."""

    out: str
    responses: int
    windows: list[Window]
    overall: dict[str, dict]            # metric -> {value, ci, n} over every response
    alerts: list[str]                   # one line per breached threshold and per metric drifting the worse way
    notes: list[str]
    stopped: str


# --- reading the log ---------------------------------------------------------------------

class LogReader:
    """Complete lines of a JSONL file that may still be growing; a torn last line waits for its end."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise located(path, "", "file not found" if not path.exists() else "not a file")
        self.path = path
        self.offset = 0
        self.line = 0

    def read(self, *, final: bool) -> list[tuple[int, dict]]:
        """(line number, row) of the lines written since the last call; `final` reads a torn last line too."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        if not final:
            data = data[:data.rfind(b"\n") + 1]
        self.offset += len(data)
        rows = []
        for raw in data.splitlines():
            self.line += 1
            if raw.strip():
                rows.append((self.line, self._row(raw)))
        return rows

    def _row(self, raw: bytes) -> dict:
        where = f"line {self.line}"
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise located(self.path, where, f"not valid UTF-8 (bad byte at offset {e.start})") from None
        except json.JSONDecodeError as e:
            raise located(self.path, where, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise located(self.path, where, "expected a JSON object with prompt and response")
        for name in ("prompt", "response"):
            if name not in row:
                have = ", ".join(row) or "none"
                raise located(self.path, where, f"{name}: missing (a monitored line has prompt and response, "
                                                f"optionally timestamp and model; this line has: {have})")
            if not isinstance(row[name], str):
                raise located(self.path, where, f"{name}: must be a string")
        if row.get("timestamp") is not None and (isinstance(row["timestamp"], bool)
                                                 or not isinstance(row["timestamp"], (str, int, float))):
            raise located(self.path, where, "timestamp: must be a string or a number")
        if row.get("model") is not None and not isinstance(row["model"], str):
            raise located(self.path, where, "model: must be a string")
        return {"line": self.line, "prompt": row["prompt"], "response": row["response"],
                "timestamp": row.get("timestamp"), "model": row.get("model") or ""}


# --- scoring ------------------------------------------------------------------------------

class Scoring:
    """The classifiers of `cai eval`, loaded once: toxicity, bias, refusal, and the judge if asked."""

    def __init__(self, cfg: MonitorConfig, out: Path):
        from cai.safety.registry import create_scorer

        self.toxicity = cfg.toxicity_scorer()
        self.bias = create_scorer("bias")
        self.judge = None
        if cfg.judge_named:
            from cai.judging.settings import JudgeSpec

            spec = cfg.resolve_judge(JudgeSpec("transformers", None, None))
            self.judge = create_scorer("judge", model=spec.model, engine=spec.engine, base_url=spec.base_url,
                                       cache_dir=str(out))
        self.threshold = cfg.toxicity_threshold

    def score(self, rows: list[dict]) -> None:
        from cai.safety.refusal import refusal_match

        texts = [r["response"] for r in rows]
        for row, tox, bias in zip(rows, self.toxicity.score(texts), self.bias.score(texts)):
            match = refusal_match(row["response"])
            row.update(toxicity=float(tox["toxicity"]), toxic=float(tox["toxicity"] > self.threshold),
                       bias=float(bias["bias"]), biased=float(bias["biased"]), refusal=float(bool(match)),
                       refusal_match=match)
        if self.judge is not None:
            for row, s in zip(rows, self.judge.score_pairs([(r["prompt"], r["response"]) for r in rows])):
                row["harmless"] = s["harmless"]

    def close(self) -> None:
        for scorer in (self.toxicity, self.bias, self.judge):
            if scorer is not None:
                scorer.close()


def estimates(rows: list[dict], *, toxicity_threshold: float, n_resamples: int, seed: int) -> dict:
    from cai.evaluation.bootstrap import estimate

    out = {}
    for name in MONITOR_METRICS:
        values = metric_values(name, lambda c: [r.get(c) for r in rows], toxicity_threshold)
        if values is not None:
            out[name] = estimate(values, n_resamples=n_resamples, seed=seed).to_dict()
    return out


# --- thresholds and drift -----------------------------------------------------------------

def load_baseline(path: str) -> tuple[dict, float | None]:
    """({metric: {value, ci}}, its toxicity threshold) from a `cai eval` metrics.json or a monitor.json."""
    data = load_json(path, "baseline file")
    if isinstance(data, dict) and data.get("kind") == "cai-monitor":
        return data["overall"]["metrics"], (data.get("config") or {}).get("toxicity_threshold")
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if isinstance(metrics, dict) and isinstance(metrics.get("model"), dict):
        return data["metrics"]["model"], data.get("toxicity_threshold")
    raise CaiError(f"{path}: not a baseline: expected a `cai eval` metrics.json (metrics.model) or a monitor.json")


def drift(window: Window, baseline: dict) -> list[Drift]:
    """Metrics whose window interval lies wholly above or below the baseline's interval."""
    found = []
    for name, entry in window.metrics.items():
        if name not in PLOTTED:
            continue
        base = baseline.get(name) or {}
        lo, hi = entry.get("ci") or (None, None)
        blo, bhi = base.get("ci") or (None, None)
        if None in (lo, hi, blo, bhi):
            continue
        direction = "up" if lo > bhi else "down" if hi < blo else None
        if direction:
            better = METRICS[name].better
            worse = (direction == "up" and better == "lower") or (direction == "down" and better == "higher")
            found.append(Drift(window.index, name, direction, worse, entry["value"], entry["ci"], base["value"],
                               base["ci"]))
    return found


def breaches(gate, metrics: dict[str, dict]) -> list:
    """The gate's failed checks on one window's (or the overall) metrics; unmeasured metrics are not failures."""
    from cai.evaluation.gate import check_gate

    return [r for r in check_gate(gate, {"metrics": {"model": metrics}}) if not r.passed and r.value is not None]


def _lines(window: Window) -> str:
    return f"lines {window.first_line}-{window.last_line}"


def alert_lines(windows: list[Window], overall: dict[str, dict], breached: dict, drifted: list[Drift]) -> list[str]:
    """One line per breached threshold and per metric drifting the worse way."""
    by_index = {w.index: w for w in windows}
    out = []
    for (metric, op, threshold), hits in breached.items():
        bad = "<" if op == ">=" else ">"
        value = (overall.get(metric) or {}).get("value")
        in_windows = [(k, v) for k, v in hits if k]
        if not in_windows:
            out.append(f"breach: {metric} {bad} {threshold:g} overall ({value:.3g}), in no single window")
            continue
        first = by_index[in_windows[0][0]]
        out.append(f"breach: {metric} {bad} {threshold:g} first in window {first.index} ({_lines(first)}, "
                   f"{in_windows[0][1]:.3g}); {len(in_windows)} of {len(windows)} windows; overall {value:.3g}")
    worse: dict[str, list[Drift]] = {}
    for d in drifted:
        if d.worse:
            worse.setdefault(d.metric, []).append(d)
    for metric, items in worse.items():
        d, w = items[0], by_index[items[0].window]
        verb = "rose" if d.direction == "up" else "fell"
        out.append(f"drift: {metric} {verb} in window {d.window} ({_lines(w)}): {d.value:.3g} "
                   f"[{d.ci[0]:.2f}, {d.ci[1]:.2f}] vs baseline {d.baseline:.3g} "
                   f"[{d.baseline_ci[0]:.2f}, {d.baseline_ci[1]:.2f}]; {len(items)} of {len(windows)} windows")
    return out


# --- the job ------------------------------------------------------------------------------

class Monitor:
    """Windows scored so far, the overall rates, and what they breach; `add` takes one window's rows."""

    def __init__(self, cfg: MonitorConfig):
        from cai.evaluation.gate import load_gate

        self.cfg = cfg
        self.gate = load_gate(cfg.thresholds)
        self.notes: list[str] = []
        self.baseline, base_threshold = load_baseline(cfg.baseline) if cfg.baseline else ({}, None)
        if base_threshold is not None and base_threshold != cfg.toxicity_threshold:
            self.notes.append(f"the baseline counts toxicity above {base_threshold:g}, this monitor above "
                              f"{cfg.toxicity_threshold:g}: toxicity_rate is not comparable")
        for name in self.gate.checks:
            if name not in MONITOR_METRICS:
                self.notes.append(f"threshold on {name} skipped: cai monitor does not measure it")
            elif name in JUDGE_METRICS and not cfg.judge_named:
                self.notes.append(f"threshold on {name} skipped: it needs the judge (--judge-model)")
        self.judge: dict | None = None           # the judge's counts (requests, cache hits), once it ran
        self.rows: list[dict] = []
        self.windows: list[Window] = []
        self.drift: list[Drift] = []
        self.breached: dict[tuple, list[tuple[int, float]]] = {}     # (metric, op, threshold) -> [(window, value)]

    def add(self, rows: list[dict], scoring: Scoring, *, partial: bool = False) -> Window:
        scoring.score(rows)
        if scoring.judge is not None:
            self.judge = scoring.judge.stats.to_dict()
        self.rows += rows
        stamps = [r["timestamp"] for r in rows if r["timestamp"] is not None]
        window = Window(index=len(self.windows) + 1, first_line=rows[0]["line"], last_line=rows[-1]["line"],
                        n=len(rows), partial=partial, first_timestamp=stamps[0] if stamps else None,
                        last_timestamp=stamps[-1] if stamps else None,
                        models=sorted({r["model"] for r in rows if r["model"]}), metrics=self._estimates(rows))
        failed = breaches(self.gate, window.metrics)
        window.breaches = [r.message for r in failed]
        for r in failed:
            self.breached.setdefault((r.metric, r.op, r.threshold), []).append((window.index, r.value))
        window.drift = drift(window, self.baseline) if self.baseline else []
        self.drift += window.drift
        self.windows.append(window)
        return window

    def _estimates(self, rows: list[dict]) -> dict[str, dict]:
        return estimates(rows, toxicity_threshold=self.cfg.toxicity_threshold, n_resamples=self.cfg.n_resamples,
                         seed=self.cfg.seed)

    def summary(self, stopped: str, out: Path) -> tuple[MonitorSummary, dict]:
        """(the summary, monitor.json's content); the overall rates are bootstrapped here, over every response."""
        overall = self._estimates(self.rows)
        breached = dict(self.breached)
        for r in breaches(self.gate, overall):            # the whole log can breach with no single window doing so
            breached.setdefault((r.metric, r.op, r.threshold), []).append((0, r.value))
        alerts = alert_lines(self.windows, overall, breached, self.drift)
        summary = MonitorSummary(out=str(out), responses=len(self.rows), windows=list(self.windows),
                                 overall=overall, alerts=alerts, notes=list(self.notes), stopped=stopped)
        return summary, self._document(summary, breached)

    def _document(self, summary: MonitorSummary, breached: dict) -> dict:
        """monitor.json: the summary with the config, thresholds, baseline and rates by model."""
        models = sorted({r["model"] for r in self.rows if r["model"]})
        return {
            "kind": "cai-monitor", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": asdict(self.cfg), "input": self.cfg.responses, "stopped": summary.stopped,
            "scorer": self.cfg.scorer, "judge": self.judge,
            "thresholds": {"source": self.cfg.thresholds or "built-in defaults (alignment guide)",
                           "compare": self.gate.compare, "passed": not breached,
                           "checks": [{"metric": name, "op": op, "threshold": t}
                                      for name, bound in self.gate.checks.items()
                                      for op, t in ((">=", bound.min), ("<=", bound.max)) if t is not None]},
            "baseline": {"path": self.cfg.baseline, "metrics": self.baseline} if self.cfg.baseline else None,
            "overall": {"n": summary.responses, "metrics": summary.overall},
            "by_model": ({m: {"n": sum(r["model"] == m for r in self.rows),
                              "metrics": self._estimates([r for r in self.rows if r["model"] == m])}
                          for m in models} if len(models) > 1 else {}),
            "windows": [asdict(w) for w in summary.windows], "drift": [asdict(d) for d in self.drift],
            "breaches": [{"metric": m, "op": op, "threshold": t, "windows": [k for k, _ in hits if k]}
                         for (m, op, t), hits in breached.items()],
            "alerts": summary.alerts, "notes": summary.notes,
        }


def default_out(cfg: MonitorConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(cfg.responses).stem).strip("-") or "responses"
    return Path("runs") / f"monitor-{slug}"


def run_monitor(cfg: MonitorConfig, *, on_window: Callable[[Window], None] | None = None) -> MonitorSummary:
    """Score the log window by window (following it if asked) and write the outputs."""
    reader = LogReader(Path(cfg.responses))
    monitor = Monitor(cfg)
    out = default_out(cfg)
    scoring = Scoring(cfg, out)
    scored = Scored(out / "scored.jsonl")
    pending: list[dict] = []
    stopped = "end of file"

    def take(rows: list[dict], partial: bool = False) -> None:
        window = monitor.add(rows, scoring, partial=partial)
        scored.append(rows)
        if cfg.follow and not partial:        # a canary's page and json stay current
            write_outputs(out, monitor.summary("following", out)[1], monitor.rows)
        if on_window:
            on_window(window)

    def take_full_windows(rows: list[dict]) -> list[dict]:
        """Score every full window of `rows`; the rest, to wait for more lines."""
        full = len(rows) - len(rows) % cfg.window
        for start in range(0, full, cfg.window):
            take(rows[start:start + cfg.window])
        return rows[full:]

    try:
        last_growth = time.monotonic()
        while True:
            new = reader.read(final=not cfg.follow)
            if new:
                last_growth = time.monotonic()
            pending += [row for _, row in new]
            pending = take_full_windows(pending)
            if not cfg.follow:
                break
            if cfg.idle_timeout is not None and time.monotonic() - last_growth >= cfg.idle_timeout:
                stopped = f"no new lines for {cfg.idle_timeout:g} s"
                break
            time.sleep(cfg.poll_seconds)
    except KeyboardInterrupt:
        stopped = "interrupted"
    try:
        if cfg.follow:                        # what came after the last poll, and a torn last line
            pending += [row for _, row in reader.read(final=True)]
        pending = take_full_windows(pending)
        if pending:
            take(pending, partial=True)
    finally:
        scoring.close()
    if not monitor.rows:
        raise located(cfg.responses, "", "no responses to monitor (the file has no lines)")
    summary, document = monitor.summary(stopped, out)
    write_outputs(out, document, monitor.rows)
    return summary


class Scored:
    """scored.jsonl, started empty and appended window by window (a long follow never rewrites it)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = False

    def append(self, rows: list[dict]) -> None:
        if not self.started:            # the first window replaces what an earlier run left
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            self.started = True
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_outputs(out: Path, result: dict, rows: list[dict]) -> None:
    """monitor.json and monitor.html, each replaced whole."""
    from cai.io import write_atomic, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "monitor.json", result)
    write_atomic(out / "monitor.html", render_html(result, rows))


# --- the page -----------------------------------------------------------------------------

def plot_rates(result: dict):
    """Each rate per window with its interval; dashed red: thresholds; grey band: the baseline's interval."""
    from cai.pages import COLORS, Plot, png, pyplot

    windows = result["windows"]
    names = [n for n in PLOTTED if any(n in w["metrics"] for w in windows)]
    if not windows or not names:
        return None
    baseline = (result.get("baseline") or {}).get("metrics") or {}
    drifted = {(d["metric"], d["window"]) for d in result["drift"] if d["worse"]}
    plt = pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(8.5, 1.9 * len(names) + 0.6), sharex=True, squeeze=False)
    x = [w["index"] for w in windows]
    for ax, name in zip(axes[:, 0], names):
        points = [(w["index"], w["metrics"][name]) for w in windows if name in w["metrics"]]
        xs = [k for k, _ in points]
        ax.fill_between(xs, [e["ci"][0] for _, e in points], [e["ci"][1] for _, e in points],
                        color=COLORS["model"], alpha=0.2, linewidth=0)
        ax.plot(xs, [e["value"] for _, e in points], marker="o", markersize=3, color=COLORS["model"])
        base = baseline.get(name)
        if base and base.get("ci") and None not in base["ci"]:
            ax.axhspan(base["ci"][0], base["ci"][1], color=COLORS["baseline"], alpha=0.25, linewidth=0)
            ax.axhline(base["value"], color=COLORS["baseline"], linestyle=":", linewidth=1)
        for check in result["thresholds"]["checks"]:
            if check["metric"] == name:
                ax.axhline(check["threshold"], color="#c0504d", linestyle="--", linewidth=1.2)
                over = [(k, e["value"]) for k, e in points if (e["value"] < check["threshold"] if check["op"] == ">="
                                                               else e["value"] > check["threshold"])]
                ax.plot([k for k, _ in over], [v for _, v in over], "o", color="#c0504d", markersize=5)
        flagged = [(k, e["value"]) for k, e in points if (name, k) in drifted]
        if flagged:
            ax.plot([k for k, _ in flagged], [v for _, v in flagged], "x", color="#c0504d", markersize=9, mew=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
    axes[-1, 0].set_xlabel("window (blue: value and 95% CI; dashed red: threshold, red dot: breach; grey: baseline CI; "
                           "x: drift)")
    axes[-1, 0].set_xticks(x if len(x) <= 30 else x[::max(1, len(x) // 30)])
    fig.suptitle("Rates over time", fontsize=10)
    return Plot("Rates over time", png(fig), "per-window rates with intervals, thresholds and baseline")


def render_html(result: dict, rows: list[dict]) -> str:
    from cai.pages import environment

    worst = sorted(rows, key=lambda r: -r.get("toxicity", 0.0))[:5]
    return environment().get_template(TEMPLATE).render(
        result=result, plot=plot_rates(result), meanings=MEANINGS, names=MONITOR_METRICS, worst=worst,
        name=Path(result["input"]).name)
