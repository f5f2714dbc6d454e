"""`cai report RUN`: a self-contained HTML report of a run, written inside it."""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli.options import argument, option
from cai.report.config import ReportConfig


def register(root: typer.Typer) -> None:
    root.command("report", help="Write a self-contained HTML report of a run (plots, tables, samples).")(report)


def report(
    run: str = argument(ReportConfig, "run"),
    out: Optional[str] = option(ReportConfig, "out"),
    samples: int = option(ReportConfig, "samples"),
    score: bool = option(ReportConfig, "score", "--score/--no-score"),
    seed: int = option(ReportConfig, "seed"),
) -> None:
    """Write RUN/report.html: pipeline counts, principles, toxicity and length, rounds, training curves,
    eval metrics against the gate, and a sample browser. Prints the file's path."""
    cfg = ReportConfig(**locals())
    from cai.report.build import build_report

    typer.echo(str(build_report(cfg)))
