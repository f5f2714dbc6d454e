"""`cai data`: preference pairs, safety filtering, audits, dataset export and checks."""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli import tables
from cai.cli.options import BareRay, argument, group, option, renamed
from cai.preferences.config import (
    AnnotationsConfig,
    AuditConfig,
    FilterConfig,
    ImportConfig,
    MixConfig,
    PairsConfig,
    SplitConfig,
)

app = group("Build, filter, audit, merge, import, mix and check preference datasets.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")


def build_pairs(cfg: PairsConfig) -> None:
    """Run the pairs job with a progress bar and print its drop table (also used by `cai generate`)."""
    from rich.progress import Progress

    from cai.preferences.job import build_dataset

    console = tables.console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring pairs", total=None)
        judged = []

        def on_judged(n: int) -> None:
            if not judged:
                judged.append(progress.add_task("judging pairs", total=None))
            progress.update(judged[0], advance=n)

        result = build_dataset(cfg, on_scored=lambda n: progress.update(task, advance=n), on_judged=on_judged)
    if result.note:
        tables.note(result.note)
    if result.judge is not None:
        console.print(result.judge.line())
    console.print(tables.splits_line(result.splits, result.out, "dropped pairs with the reason: dropped.jsonl"))
    console.print(tables.drops(f"{result.records} records -> {result.candidates} pairs -> {result.kept} kept",
                               result.dropped))


@app.command(help="Merge the runs of several shards into one run directory.")
def merge(
    runs: list[str] = typer.Argument(..., help="Run directories made with the same settings."),
    out: str = typer.Option(..., help="New run directory."),
) -> None:
    from cai.generation.merge import merge_runs

    counts = merge_runs(runs, out)
    tables.console().print(
        f"merged {counts['records']} records from {len(runs)} runs into {out}"
        + (f" ({counts['duplicates']} identical duplicates skipped)" if counts["duplicates"] else "")
    )


@app.command(cls=BareRay, help="Build preference pairs from a run, filter them and export the dataset.")
def pairs(
    run: str = argument(PairsConfig, "run"),
    strategy: str = option(PairsConfig, "strategy"),
    out: Optional[str] = option(PairsConfig, "out"),
    filter: bool = option(PairsConfig, "filter", "--filter/--no-filter"),  # noqa: A002 - the flag users type
    rules: Optional[str] = option(PairsConfig, "rules"),
    scorer: Optional[str] = option(PairsConfig, "scorer"),
    toxicity_max: Optional[float] = option(PairsConfig, "toxicity_max"),
    test_share: float = option(PairsConfig, "test_share"),
    seed: int = option(PairsConfig, "seed"),
    keep_truncated: bool = option(PairsConfig, "keep_truncated"),
    skip_rule: list[str] = option(PairsConfig, "skip_rule"),
    verify: str = option(PairsConfig, "verify"),
    verify_margin: float = option(PairsConfig, "verify_margin"),
    feedback_margin: float = option(PairsConfig, "feedback_margin"),
    judge_engine: Optional[str] = option(PairsConfig, "judge_engine"),
    judge_base_url: Optional[str] = option(PairsConfig, "judge_base_url"),
    judge_model: Optional[str] = option(PairsConfig, "judge_model"),
    feedback_model: Optional[str] = renamed("--feedback-model", "--judge-model"),
    feedback_engine: Optional[str] = renamed("--feedback-engine", "--judge-engine"),
    ray: Optional[str] = option(PairsConfig, "ray", metavar="[ADDRESS]"),
    replicas: Optional[int] = option(PairsConfig, "replicas"),
    gpus_per_replica: Optional[float] = option(PairsConfig, "gpus_per_replica"),
    cpus_per_replica: float = option(PairsConfig, "cpus_per_replica"),
) -> None:
    settings = {k: v for k, v in locals().items() if k not in ("feedback_model", "feedback_engine")}
    build_pairs(PairsConfig(**settings))


@app.command(help="Print the counts, drops and scores of an exported dataset.")
def stats(path: str = typer.Argument(..., help="Dataset directory written by `cai data pairs`.")) -> None:
    from cai.preferences.export import load_card

    console = tables.console()
    for table in tables.dataset_stats(path, load_card(path)):
        console.print(table)


@app.command(help="Audit a run or dataset: what each quality rule flags, refusals by category, length change.")
def audit(
    path: str = argument(AuditConfig, "path"),
    out: Optional[str] = option(AuditConfig, "out"),
    rules: Optional[str] = option(AuditConfig, "rules"),
    examples: int = option(AuditConfig, "examples"),
) -> None:
    cfg = AuditConfig(**locals())
    from cai.preferences.audit import run_audit, write_html

    result = run_audit(cfg)
    console = tables.console()
    for text in result.notes:
        tables.note(text)
    for table in tables.audit(result):
        console.print(table)
    if cfg.out:
        console.print(f"audit page written to {write_html(result, cfg.out)}")


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
    path: str = argument(FilterConfig, "path"),
    out: str = option(FilterConfig, "out"),
    rules: Optional[str] = option(FilterConfig, "rules"),
    scorer: Optional[str] = option(FilterConfig, "scorer"),
    toxicity_max: Optional[float] = option(FilterConfig, "toxicity_max"),
    test_share: float = option(FilterConfig, "test_share"),
    seed: int = option(FilterConfig, "seed"),
) -> None:
    cfg = FilterConfig(**locals())
    from cai.preferences.job import filter_dataset

    result = filter_dataset(cfg)
    console = tables.console()
    console.print(tables.drops(f"{result.pairs} pairs -> {result.kept} kept", result.dropped))
    console.print(tables.splits_line(result.splits, result.out))


@app.command("import-annotations", help="Import human preference annotations (the alignment guide's format).")
def import_annotations(
    path: str = argument(AnnotationsConfig, "path"),
    out: Optional[str] = option(AnnotationsConfig, "out"),
    min_seconds: float = option(AnnotationsConfig, "min_seconds"),
    test_share: float = option(AnnotationsConfig, "test_share"),
    seed: int = option(AnnotationsConfig, "seed"),
) -> None:
    cfg = AnnotationsConfig(**locals())
    from cai.preferences.annotations import report_table
    from cai.preferences.job import import_annotations as run_import

    result, counts = run_import(cfg)
    console = tables.console()
    console.print(report_table(result.report))
    if counts is not None:
        console.print(tables.splits_line(counts, cfg.out))


@app.command("import", help="Import a public dataset: hh-rlhf, hh-rlhf-red-team, shp, webgpt or cai-harmless.")
def import_(
    format: str = argument(ImportConfig, "format"),  # noqa: A002 - the argument users type
    source: str = argument(ImportConfig, "source"),
    out: str = option(ImportConfig, "out"),
    split_map: list[str] = option(ImportConfig, "split_map"),
    limit: Optional[int] = option(ImportConfig, "limit"),
    score: bool = option(ImportConfig, "score", "--score"),
    scorer: str = option(ImportConfig, "scorer"),
    min_rating: Optional[float] = option(ImportConfig, "min_rating"),
    min_score_ratio: Optional[float] = option(ImportConfig, "min_score_ratio"),
    test_share: float = option(ImportConfig, "test_share"),
    seed: int = option(ImportConfig, "seed"),
) -> None:
    cfg = ImportConfig(**locals())
    from cai.preferences.imports.job import run_import

    result = run_import(cfg)
    for text in result.notes:
        tables.note(text)
    console = tables.console()
    for item in tables.imported(result):
        console.print(item)


@app.command(help="Mix preference datasets by weight (test splits kept whole and apart; the card lists the sources).")
def mix(
    datasets: list[str] = argument(MixConfig, "datasets"),
    out: str = option(MixConfig, "out"),
    weights: Optional[str] = option(MixConfig, "weights"),
    seed: int = option(MixConfig, "seed"),
) -> None:
    cfg = MixConfig(**locals())
    from cai.preferences.mix import mix_datasets

    result = mix_datasets(cfg)
    for text in result.notes:
        tables.note(text)
    console = tables.console()
    for item in tables.mixed(result):
        console.print(item)


@app.command(help="Split a dataset by prompt into train, validation and test (choose settings on validation).")
def split(
    dataset: str = argument(SplitConfig, "dataset"),
    out: str = option(SplitConfig, "out"),
    validation_share: float = option(SplitConfig, "validation_share"),
    test_share: Optional[float] = option(SplitConfig, "test_share"),
    seed: int = option(SplitConfig, "seed"),
) -> None:
    cfg = SplitConfig(**locals())
    from cai.preferences.split import split_dataset

    result = split_dataset(cfg)
    tables.console().print(tables.splits_line(result.splits, result.out) + "\nprompts: "
                           + ", ".join(f"{k} {v}" for k, v in result.prompts.items()))
