"""`cai --help` stays fast: building the CLI and every command's help imports no heavy library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "trl", "vllm", "datasets", "peft", "accelerate", "matplotlib", "detoxify", "ray")

CODE = """
import sys
from typer.testing import CliRunner
from cai.cli.main import app

runner = CliRunner()
def walk(command, path):
    assert runner.invoke(app, [*path, "--help"]).exit_code == 0, path
    for name, sub in getattr(command, "commands", {}).items():
        walk(sub, [*path, name])

import typer.main
walk(typer.main.get_command(app), [])
print(",".join(m for m in %r if m in sys.modules))
"""


def test_help_of_every_command_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", CODE % (HEAVY,)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported by --help: {out.stdout.strip()}"
