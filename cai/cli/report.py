"""`cai report RUN`: a self-contained HTML report of a run, written inside it.

The sub-app has no subcommands: its callback is the command, so `cai report
runs/NAME [--out FILE]` works with options before or after the run.
"""

from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperGroup


class _CommandLikeGroup(TyperGroup):
    """A group that reads as a plain command: options may follow the argument; usage shows no COMMAND."""

    def collect_usage_pieces(self, ctx):
        pieces = super().collect_usage_pieces(ctx)
        return [p for p in pieces if p not in ("COMMAND [ARGS]...", self.subcommand_metavar)]


app = typer.Typer(help="Write a self-contained HTML report of a run (plots, tables, samples).",
                  cls=_CommandLikeGroup, no_args_is_help=True,
                  context_settings={"allow_interspersed_args": True})


@app.callback(invoke_without_command=True)
def report(
    run: str = typer.Argument(..., help="Run directory (runs/NAME)."),
    out: Optional[str] = typer.Option(None, help="HTML file to write (default: RUN/report.html)."),
    samples: int = typer.Option(40, help="Pairs (and eval replies) shown in the sample browser."),
    score: bool = typer.Option(True, "--score/--no-score", help="Score initial and revised responses for toxicity "
                                                                "with the offline classifier (a few seconds)."),
    seed: int = typer.Option(0, help="Seed for picking the samples."),
) -> None:
    """Write RUN/report.html: pipeline counts, principles, toxicity and length, rounds, training curves,
    eval metrics against the gate, and a sample browser. Prints the file's path."""
    from cai.report.build import build_report

    path = build_report(run, out, samples=samples, score=score, seed=seed)
    typer.echo(str(path))
