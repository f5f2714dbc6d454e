"""`cai generate`: answer prompts, then critique and revise them under a constitution."""

import typer


def register(app: typer.Typer) -> None:
    @app.command(help="Answer prompts with a local model, then critique and revise under a constitution.")
    def generate() -> None:
        raise typer.Exit(0)
