"""Helpers shared by test modules (not collected: no `test_` prefix)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(args, code: int = 0):
    """Run `cai ARGS` in-process and check its exit code; the result keeps the output for asserts."""
    from typer.testing import CliRunner

    from cai.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result
