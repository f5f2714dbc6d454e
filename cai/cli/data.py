"""`cai data`: preference pairs, safety filtering, dataset export and checks."""

import typer

app = typer.Typer(help="Build, filter, merge and check preference datasets.", no_args_is_help=True)
