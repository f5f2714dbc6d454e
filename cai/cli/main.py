"""The `cai` entry point: assembles the command groups and turns errors into one line.

Heavy libraries (torch, transformers, vllm, trl) are imported inside the
commands that need them, so `cai --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from cai import __version__
from cai.cli.options import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
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
    """Every command module adds its commands the same way: `register(app)`, in the order `cai --help` lists them."""
    from cai.cli import constitution, data, evaluate, generate, monitor, report, train

    for module in (constitution, generate, data, train, evaluate, monitor, report):
        module.register(app)


_register()


def main() -> None:
    app(prog_name="cai")


if __name__ == "__main__":
    sys.exit(main())
