"""Rich tables the commands print: built from the typed results the library returns."""

from __future__ import annotations


def console():
    """Tables and notes go to stderr; stdout stays for what scripts read."""
    from rich.console import Console

    return Console(stderr=True)


def note(text: str) -> None:
    console().print(f"[yellow]note:[/yellow] {text}", highlight=False, soft_wrap=True)


def simple(title: str, columns: tuple[str, ...], rows, right: tuple[str, ...] = ()):
    """A table of `rows` (tuples of cells) under `columns`; the `right` columns are right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def generation(summary):
    """The counts of one `cai generate` call."""
    from rich.table import Table

    rows = [("selected", summary.selected), ("skipped (done before)", summary.skipped_done)]
    if summary.skipped_failed is not None:
        rows.append(("skipped (failed before)", summary.skipped_failed))
    rows += [("done", summary.done), ("failed", summary.failed), ("preambles stripped", summary.preambles_stripped),
             ("completion tokens", f"{summary.completion_tokens:,}"), ("tokens/s", f"{summary.tokens_per_second:,.1f}"),
             ("wall seconds", f"{summary.wall_seconds:,.1f}"), ("run", summary.run)]
    if summary.replicas:
        rows.insert(-3, ("Ray replicas started", summary.replicas))
    table = Table(title="cai generate", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def drops(title: str, dropped: dict):
    rows = sorted(dropped.items(), key=lambda kv: -kv[1]) or [("(nothing dropped)", 0)]
    return simple(title, ("dropped because", "pairs"), rows, right=("pairs",))


def splits_line(counts: dict, out: str, dropped: str = "") -> str:
    """The split sizes and where they went (`dropped`: where the dropped rows are), and why an empty split is not
    what `datasets.load_dataset` shows."""
    from cai.preferences.export import empty_splits_note

    note = empty_splits_note(counts)
    return ("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"\ndataset written to {out}"
            + (f" ({dropped})" if dropped else "") + (f"\nnote: {note.replace('DIR', str(out))}" if note else ""))


def dataset_stats(path: str, front: dict) -> list:
    """The tables of `cai data stats` from a dataset card's front matter."""
    from cai.generation.snapshot import snapshot_status

    stats_cols = ("mean", "p50", "p90", "max")
    out = [
        simple(path, ("split", "rows"), (front.get("counts") or {}).items(), right=("rows",)),
        simple("principle usage", ("principle", "pairs"), (front.get("principle_usage") or {}).items(),
               right=("pairs",)),
        simple("scores", ("column", *stats_cols),
               ((col, *(f"{s[k]:.3f}" for k in stats_cols)) for col, s in (front.get("scores") or {}).items()),
               right=stats_cols),
    ]
    line = f"model: {front.get('model')}  strategy: {front.get('strategy')}"
    constitution = front.get("constitution") or {}
    if constitution:
        line += (f"\nconstitution: {constitution.get('name')} v{constitution.get('version')}  "
                 f"({snapshot_status(constitution)})")
    out.append(line)
    if front.get("quality_rules"):
        out.append(simple("quality rules", ("rule", "enabled", "settings", "dropped"), (
            (name, "yes" if r.get("enabled") else "no",
             ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("enabled", "dropped")), r.get("dropped", 0))
            for name, r in front["quality_rules"].items()), right=("dropped",)))
    sources = front.get("sources") or []
    if sources:                             # imports and mixes: where the rows came from
        keys = tuple(dict.fromkeys(k for src in sources for k in src))
        out.append(simple("sources", keys, ((src.get(k, "") for k in keys) for src in sources)))
    out.append(drops("drops", front.get("dropped") or {}))
    return out


def audit(result) -> list:
    """The tables of `cai data audit`."""
    from rich.table import Table

    table = Table(title=f"quality rules: {len(result.kept)} kept + {len(result.dropped)} dropped pairs")
    for col in ("rule", "flagged", "of them kept", "dropped", "example"):
        table.add_column(col, justify="left" if col in ("rule", "example") else "right",
                         overflow="fold", max_width=70 if col == "example" else None)
    for r in result.rules:
        example = r["examples"][0] if r["examples"] else None
        table.add_row(r["rule"] + ("" if r["enabled"] else " (off)"),
                      "-" if r["flagged"] is None else str(r["flagged"]),
                      "-" if r["flagged_kept"] is None else str(r["flagged_kept"]), str(r["dropped"]),
                      f"{example['id']}: {example['detail']}" if example else "-")
    out: list = [table]
    if result.refusals:
        out.append(simple("kept pairs whose chosen is a refusal, by prompt category",
                          ("category", "pairs", "refusals", "share"),
                          ((r["category"], r["pairs"], r["refusals"], f"{r['share']:.0%}") for r in result.refusals),
                          right=("pairs", "refusals", "share")))
    else:
        out.append("no kept pairs: no refusal shares or length change to report")
    length = result.length
    if length["pairs"]:
        out.append(f"length: chosen {length['chosen_words']:.1f} words, rejected {length['rejected_words']:.1f} "
                   f"words; mean change {length['change']:+.1f} words over {length['pairs']} pairs")
    return out


def eval_metrics(result: dict):
    """A rich table: one row per metric, model | baseline | difference | gate."""
    from rich.table import Table

    from cai.evaluation.metrics import METRICS, format_metric

    block = result["metrics"]
    has_baseline = "baseline" in block
    checks: dict[str, list[dict]] = {}
    for check in (result.get("gate") or {}).get("checks", []):
        checks.setdefault(check["metric"], []).append(check)
    n = result.get("counts", {})
    table = Table(title=f"cai eval: {n.get('red_team', 0)} red-team, {n.get('helpful', 0)} helpful prompts "
                        "(value [95% bootstrap CI])", caption="safety metrics on red-team prompts, refusal_rate on "
                        "helpful ones, the rest on all")
    table.add_column("metric", no_wrap=True)
    table.add_column("model", justify="right")
    if has_baseline:
        table.add_column("baseline", justify="right")
        table.add_column("difference", justify="right")
    table.add_column("gate", no_wrap=True)
    for name, metric in METRICS.items():
        section = "comparison" if metric.comparison else "model"
        entry = (block.get(section) or {}).get(name)
        base = None if metric.comparison else (block.get("baseline") or {}).get(name)
        if entry is None and base is None and name not in checks:
            continue
        gate_cells = []
        for c in checks.get(name, []):
            mark = "[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]"
            gate_cells.append(f"{mark} {c['op']}{c['threshold']:g}")
        cells = [name, format_metric(entry)]
        if has_baseline:
            cells += [format_metric(base), format_metric((block.get("delta") or {}).get(name), signed=True)]
        table.add_row(*cells, ", ".join(gate_cells) or "")
    return table


def rm_metrics(result: dict):
    """The table of `cai eval rm`."""
    from rich.table import Table

    from cai.evaluation.metrics import RM_METRICS, format_metric

    table = Table(title=f"cai eval rm: {result['pairs']} pairs from {result['data']} (95% bootstrap CI)")
    for col in ("metric", "value", "meaning"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for name, entry in result["metrics"]["rm"].items():
        table.add_row(name, format_metric(entry), RM_METRICS[name].description)
    return table


def imported(result) -> list:
    """What `cai data import` prints: what was written where, the next step, and the drops."""
    written, out = result.written, result.out
    lines: list = []
    if result.output == "pairs":
        lines.append(splits_line(written.counts, out, "dropped rows with the reason: dropped.jsonl"))
    elif result.output == "prompts":
        lines.append(f"{written.counts['prompts']} prompts written to {out}/prompts.jsonl; generate with "
                     f"`cai generate -c constitution/hhh.yaml --prompts {out}/prompts.jsonl`")
    else:
        test = written.counts["test"]
        lines.append(f"{written.counts['train'] + test} generation records written to run {out} ({test} in the test "
                     f"split); constitution: {written.constitution}")
        if written.partial_records:
            lines.append(f"[yellow]note:[/yellow] {written.partial_records} records had more rounds than their rows "
                         "hold; the middle revisions are left out")
        lines.append(f"build pairs with `cai data pairs {out} --strategy final-vs-initial` (or per-round)")
    lines.append(drops(f"{result.read} rows read -> {result.kept} kept", result.dropped))
    return lines


def mixed(result) -> list:
    """What `cai data mix` prints: each source's share and rows, the splits, the drops."""
    from cai.text import format_number

    out: list = [simple(f"mix written to {result.out}", ("source", "weight", "train rows", "train used", "test rows"),
                        ((s.name, format_number(s.weight), s.train_rows, s.train_used, s.test_rows)
                         for s in result.sources), right=("weight", "train rows", "train used", "test rows")),
                 splits_line(result.splits, result.out)]
    if result.dropped:
        out.append(drops("dropped", result.dropped))
    return out


MONITOR_SHOWN = ("safety_score", "toxicity_rate", "bias_rate", "refusal_rate")


def monitor_window(window) -> str:
    """One window of `cai monitor`: its rates, and its breaches and drift in red."""
    from cai.text import format_number

    values = "  ".join(f"{n} {format_number(window.metrics[n]['value'])}" for n in MONITOR_SHOWN
                       if n in window.metrics)
    flags = window.breaches + [f"drift {d.metric} {d.direction}" for d in window.drift if d.worse]
    return (f"window {window.index} (lines {window.first_line}-{window.last_line}, n={window.n}): {values}"
            + (f"  [red]{'; '.join(flags)}[/red]" if flags else ""))


def monitor_overall(result) -> str:
    """The whole log's rates with their intervals, and where the outputs are."""
    from cai.evaluation.metrics import format_metric

    rates = "  ".join(f"{n} {format_metric(result.overall[n])}" for n in MONITOR_SHOWN if n in result.overall)
    return (f"{len(result.windows)} windows; overall: {rates}  ({result.responses} responses)\n"
            f"written: {result.out}/monitor.json, {result.out}/monitor.html")
