"""`cai eval`: harmlessness and helpfulness of a trained model against a baseline."""

import typer

app = typer.Typer(help="Evaluate a trained model: toxicity, bias, refusals, safety gate.", no_args_is_help=True)
