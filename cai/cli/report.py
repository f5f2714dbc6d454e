"""`cai report`: a self-contained HTML report of a run."""

import typer

app = typer.Typer(help="Write an HTML report of a run.", no_args_is_help=True)
