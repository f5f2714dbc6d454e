"""The `cai` entry point: assembles the command groups and turns errors into one line.

Heavy libraries (torch, transformers, vllm, trl) are imported inside the
commands that need them, so `cai --help` stays fast.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from cai import __version__
from cai.errors import CaiError


class _OneLineErrors(TyperGroup):
    """Print a CaiError as one line on stderr and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CaiError as err:
            for line in str(err).splitlines() or [type(err).__name__]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: work done so far is saved", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_OneLineErrors,
    help="Constitutional AI data generation: critique -> revise, preference pairs, safety filters, training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cai {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Constitutional AI data generation toolkit."""


def _register() -> None:
    from cai.cli import constitution, data, evaluate, generate, render, report, train

    render.register(constitution.app)
    app.add_typer(constitution.app, name="constitution")
    generate.register(app)
    app.add_typer(data.app, name="data")
    app.add_typer(train.app, name="train")
    app.add_typer(evaluate.app, name="eval")
    app.add_typer(report.app, name="report")


_register()


def main() -> None:
    app(prog_name="cai")


if __name__ == "__main__":
    sys.exit(main())
