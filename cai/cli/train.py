"""`cai train`: SFT, DPO and reward-model recipes on TRL + PEFT."""

import typer

app = typer.Typer(help="Train with SFT, DPO or a reward model on a cai dataset.", no_args_is_help=True)
