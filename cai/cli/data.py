"""`cai data`: preference pairs, safety filtering, dataset export and checks."""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="Build, filter, merge and check preference datasets.", no_args_is_help=True)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _drop_table(title: str, dropped: dict):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("dropped because")
    table.add_column("pairs", justify="right")
    for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]):
        table.add_row(reason, str(n))
    if not dropped:
        table.add_row("(nothing dropped)", "0")
    return table


@app.command(help="Merge the runs of several shards into one run directory.")
def merge(
    runs: list[str] = typer.Argument(..., help="Run directories made with the same settings."),
    out: str = typer.Option(..., help="New run directory."),
) -> None:
    from cai.generation.merge import merge_runs

    counts = merge_runs(runs, out)
    _console().print(
        f"merged {counts['records']} records from {len(runs)} runs into {out}"
        + (f" ({counts['duplicates']} identical duplicates skipped)" if counts["duplicates"] else "")
    )


@app.command(help="Build preference pairs from a run, filter them and export the dataset.")
def pairs(
    run: str = typer.Argument(..., help="Run directory made by `cai generate`."),
    strategy: str = typer.Option("final-vs-initial", help="final-vs-initial, per-round or ai-feedback."),
    out: Optional[str] = typer.Option(None, help="Dataset directory (default: RUN/dataset)."),
    no_filter: bool = typer.Option(False, "--no-filter", help="Skip safety scoring and filtering."),
    rules: Optional[str] = typer.Option(None, help="YAML file of safety thresholds and a `quality:` section."),
    scorer: Optional[str] = typer.Option(None, help="Toxicity scorer: toxic-bilstm (default) or detoxify."),
    toxicity_max: Optional[float] = typer.Option(None, help="Drop pairs whose chosen toxicity is above this (0.7)."),
    test_share: float = typer.Option(0.1, help="Share of prompts held out in the test splits."),
    seed: int = typer.Option(0),
    keep_truncated: bool = typer.Option(False, help="Keep pairs whose texts hit the token budget."),
    skip_rule: list[str] = typer.Option([], help="Turn a quality rule off: few-shot-copy, critique-echo, "
                                                 "repetition-loop, meta-comment or off-topic (repeatable)."),
    verify: str = typer.Option("none", help="judge: drop pairs the AI-feedback judge does not prefer "
                                            "under their own principles (`judge disagrees`)."),
    verify_margin: float = typer.Option(0.1, help="--verify judge: keep pairs with P(chosen better) >= 0.5 + this."),
    feedback_margin: float = typer.Option(0.1, help="ai-feedback: keep pairs whose soft label is this far from 0.5."),
    feedback_model: Optional[str] = typer.Option(None, help="ai-feedback and --verify judge: judge model "
                                                            "(default: the run's model)."),
) -> None:
    from rich.progress import Progress

    from cai.preferences.job import PairsConfig, build_dataset
    from cai.preferences.quality import load_quality_rules
    from cai.preferences.strategies import PairRules
    from cai.safety.filter import load_rules

    cfg = PairsConfig(run=run, strategy=strategy, out=out, filter=not no_filter,
                      rules=load_rules(rules, scorer=scorer, toxicity_max=toxicity_max),
                      pair_rules=PairRules(drop_truncated=not keep_truncated,
                                           quality=load_quality_rules(rules, skip=skip_rule)),
                      test_share=test_share, seed=seed, feedback_margin=feedback_margin,
                      feedback_model=feedback_model, verify=verify, verify_margin=verify_margin)
    console = _console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring pairs", total=None)

        class _Reporter:
            def advance(self, n: int) -> None:
                progress.update(task, advance=n)

        result = build_dataset(cfg, reporter=_Reporter())
    if result["note"]:
        console.print(f"[yellow]note:[/yellow] {result['note']}")
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in result["splits"].items()))
    console.print(f"dataset written to {result['out']} (dropped pairs with the reason: dropped.jsonl)")
    console.print(_drop_table(f"{result['records']} records -> {result['candidate pairs']} pairs -> "
                              f"{result['kept pairs']} kept", result["dropped"]))


@app.command(help="Print the counts, drops and scores of an exported dataset.")
def stats(path: str = typer.Argument(..., help="Dataset directory written by `cai data pairs`.")) -> None:
    from pathlib import Path

    from rich.table import Table

    from cai.errors import CaiError
    from cai.generation.snapshot import snapshot_status
    from cai.preferences.export import read_card

    if not (Path(path) / "README.md").is_file():
        raise CaiError(f"{path}: no dataset card README.md; is this a directory written by `cai data pairs`?")
    front = read_card(Path(path))
    if front is None:
        raise CaiError(f"{Path(path) / 'README.md'}: no YAML front matter")
    console = _console()
    table = Table(title=f"{path}")
    table.add_column("split")
    table.add_column("rows", justify="right")
    for split, n in front.get("counts", {}).items():
        table.add_row(split, str(n))
    console.print(table)
    usage = Table(title="principle usage")
    usage.add_column("principle")
    usage.add_column("pairs", justify="right")
    for pid, n in (front.get("principle_usage") or {}).items():
        usage.add_row(pid, str(n))
    console.print(usage)
    scores = Table(title="scores")
    for col in ("column", "mean", "p50", "p90", "max"):
        scores.add_column(col, justify="left" if col == "column" else "right")
    for col, s in (front.get("scores") or {}).items():
        scores.add_row(col, *(f"{s[k]:.3f}" for k in ("mean", "p50", "p90", "max")))
    console.print(scores)
    constitution = front.get("constitution") or {}
    console.print(f"model: {front.get('model')}  strategy: {front.get('strategy')}")
    if constitution:
        console.print(f"constitution: {constitution.get('name')} v{constitution.get('version')}  "
                      f"({snapshot_status(constitution)})")
    if front.get("quality_rules"):
        quality = Table(title="quality rules")
        for col in ("rule", "enabled", "settings", "dropped"):
            quality.add_column(col, justify="right" if col == "dropped" else "left")
        for name, r in front["quality_rules"].items():
            quality.add_row(name, "yes" if r.get("enabled") else "no",
                            ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("enabled", "dropped")),
                            str(r.get("dropped", 0)))
        console.print(quality)
    console.print(_drop_table("drops", front.get("dropped") or {}))


@app.command(help="Audit a run or dataset: what each quality rule flags, refusals by category, length change.")
def audit(
    path: str = typer.Argument(..., help="Run directory or dataset directory."),
    out: Optional[str] = typer.Option(None, help="Also write an HTML page of the flagged pairs (e.g. audit.html)."),
    rules: Optional[str] = typer.Option(None, help="YAML rules file (its `quality:` section); default thresholds otherwise."),
    examples: int = typer.Option(3, help="Flagged pairs kept per rule for the HTML page."),
) -> None:
    from rich.table import Table

    from cai.preferences.audit import run_audit, write_html
    from cai.preferences.quality import load_quality_rules

    result = run_audit(path, rules=load_quality_rules(rules), examples=examples)
    console = _console()
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
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
    console.print(table)
    if result.refusals:
        refusals = Table(title="kept pairs whose chosen is a refusal, by prompt category")
        for col in ("category", "pairs", "refusals", "share"):
            refusals.add_column(col, justify="left" if col == "category" else "right")
        for r in result.refusals:
            refusals.add_row(r["category"], str(r["pairs"]), str(r["refusals"]), f"{r['share']:.0%}")
        console.print(refusals)
    else:
        console.print("no kept pairs: no refusal shares or length change to report")
    length = result.length
    if length["pairs"]:
        console.print(f"length: chosen {length['chosen_words']:.1f} words, rejected {length['rejected_words']:.1f} "
                      f"words; mean change {length['change']:+.1f} words over {length['pairs']} pairs")
    if out:
        console.print(f"audit page written to {write_html(result, out)}")


@app.command(help="Check a preference dataset (JSONL or saved dataset dir): one line per bad row.")
def validate(path: str = typer.Argument(..., help="A JSONL file or a dataset directory.")) -> None:
    from cai.preferences.validation import validate_preferences

    count, problems = validate_preferences(path)
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        typer.echo(f"{len(problems)} problems in {count} rows", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {path} ({count} rows)")


@app.command(help="Score pairs (JSONL or dataset dir) with safety classifiers, drop by the rules, write a dataset.")
def filter(  # noqa: A001 - the command is named for what users type
    path: str = typer.Argument(..., help="A pairs JSONL file or a dataset directory."),
    out: str = typer.Option(..., help="Dataset directory to write."),
    rules: Optional[str] = typer.Option(None, help="YAML file of safety thresholds."),
    scorer: Optional[str] = typer.Option(None, help="Toxicity scorer: toxic-bilstm (default) or detoxify."),
    toxicity_max: Optional[float] = typer.Option(None, help="Drop pairs whose chosen toxicity is above this (0.7)."),
    test_share: float = typer.Option(0.1),
    seed: int = typer.Option(0),
) -> None:
    from cai.preferences.export import write_dataset
    from cai.preferences.validation import iter_rows, row_problems
    from cai.safety.filter import apply_rules, load_rules, score_rows

    safety = load_rules(rules, scorer=scorer, toxicity_max=toxicity_max)
    rows = []
    for where, row in iter_rows(path):
        problems = row_problems(row)
        if problems:
            from cai.errors import CaiError

            raise CaiError(f"{path}: {where}: {problems[0]} (run `cai data validate {path}`)")
        rows.append(dict(row))
    score_rows(rows, safety)
    dropped_rows: list[dict] = []
    kept, dropped = apply_rules(rows, safety, on_drop=lambda row, why: dropped_rows.append({**row, "drop_reason": why}))
    counts = write_dataset(kept, out, test_share=test_share, seed=seed, dropped_rows=dropped_rows,
                           meta={"dropped": dict(dropped), "strategy": "filtered", "command": "cai data filter"})
    console = _console()
    console.print(_drop_table(f"{len(rows)} pairs -> {len(kept)} kept", dict(dropped)))
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"\ndataset written to {out}")


@app.command("import-annotations", help="Import human preference annotations (the alignment guide's format).")
def import_annotations(
    path: str = typer.Argument(..., help="JSONL or JSON list of annotations."),
    out: Optional[str] = typer.Option(None, help="Dataset directory to write (pairs.jsonl is written inside)."),
    min_seconds: float = typer.Option(10.0, help="Annotations faster than this are flagged too fast."),
    test_share: float = typer.Option(0.1),
    seed: int = typer.Option(0),
) -> None:
    from pathlib import Path

    from cai.preferences.annotations import import_annotations as run_import
    from cai.preferences.annotations import report_table, write_pairs_jsonl
    from cai.preferences.export import write_dataset

    result = run_import(path, min_seconds=min_seconds)
    console = _console()
    console.print(report_table(result.report))
    if out:
        rows = [{**r, "generation_id": r["item_id"], "category": r.get("category", ""), "principle_ids": [],
                 "model": "human"} for r in result.rows]
        counts = write_dataset(rows, out, test_share=test_share, seed=seed,
                               meta={"strategy": "human", "command": f"cai data import-annotations {path}"})
        write_pairs_jsonl(result.rows, Path(out) / "pairs.jsonl")
        console.print("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"\ndataset written to {out}")
