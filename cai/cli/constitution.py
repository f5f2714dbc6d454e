"""`cai constitution`: validate, inspect and edit constitution files."""

import typer

app = typer.Typer(help="Validate, list, edit and render constitutions.", no_args_is_help=True)
