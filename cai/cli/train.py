"""`cai train`: SFT, DPO, reward-model and online RL (GRPO, RLOO) recipes on TRL + PEFT."""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli import tables
from cai.cli.options import group, option
from cai.train.config import PipelineConfig, TrainConfig

app = group("Train with SFT, DPO, a reward model or online RL (GRPO, RLOO) on a cai dataset.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")


def _print_result(result) -> None:
    from cai.train.summary import summary_table

    console = tables.console()
    if result.dry_run:
        import io

        from ruamel.yaml import YAML

        buf = io.StringIO()
        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump(result.resolved, buf)
        console.print(f"[green]valid[/] {result.kind} recipe; resolved settings (no model loaded):", highlight=False)
        typer.echo(buf.getvalue().rstrip())
        return
    if result.summary:
        console.print(summary_table(result.summary, title=f"cai train {result.kind}: {result.out}"))
    if result.skipped:
        return
    console.print(f"wrote {result.out} (config.yaml, metrics.jsonl, summary.json, README.md)", highlight=False)


def _command(kind: str):
    def command(
        data: str = option(TrainConfig, "data", "--data", "-d"),
        recipe: Optional[str] = option(TrainConfig, "recipe", "--recipe", "-r"),
        model: Optional[str] = option(TrainConfig, "model", "--model", "-m"),
        out: Optional[str] = option(TrainConfig, "out", "--out", "-o"),
        set: Optional[list[str]] = option(TrainConfig, "set", "--set"),  # noqa: A002 - the flag users type
        merge: bool = option(TrainConfig, "merge", "--merge"),
        overwrite: bool = option(TrainConfig, "overwrite", "--overwrite"),
        num_processes: int = option(TrainConfig, "num_processes", "--num-processes", "-n"),
        accelerate_config: Optional[str] = option(TrainConfig, "accelerate_config", "--accelerate-config"),
        dry_run: bool = option(TrainConfig, "dry_run", "--dry-run"),
    ) -> None:
        given = {name: value for name, value in locals().items() if name != "kind"}   # kind: from the closure
        cfg = TrainConfig(**{**given, "set": list(set or [])})
        from cai.train.runner import train

        _print_result(train(kind, cfg, on_note=tables.note))

    return command


COMMANDS = {
    "sft": "Supervised fine-tuning on the revisions (train_sft): the SL-CAI stage.",
    "dpo": "DPO on chosen vs rejected (train_prefs); LoRA reference = base with the adapter off.",
    "reward": "Reward model (one-output classifier) on chosen vs rejected, with a margin; reports test accuracy.",
    "grpo": "Online RL (GRPO) on the dataset's prompts against the recipe's rewards: reward model, judge, "
            "toxicity, refusal.",
    "rloo": "Online RL (RLOO) on the dataset's prompts against the recipe's rewards: reward model, judge, "
            "toxicity, refusal.",
}
for _kind, _help in COMMANDS.items():
    app.command(_kind, help=_help)(_command(_kind))


@app.command("pipeline", help="Chain stages (SFT -> DPO, SFT -> reward, SFT -> reward -> GRPO/RLOO): finished "
                              "stages are skipped, an interrupted one resumes.")
def pipeline(
    data: str = option(PipelineConfig, "data", "--data", "-d"),
    recipe: str = option(PipelineConfig, "recipe", "--recipe", "-r"),
    model: Optional[str] = option(PipelineConfig, "model", "--model", "-m"),
    out: Optional[str] = option(PipelineConfig, "out", "--out", "-o"),
    set: Optional[list[str]] = option(PipelineConfig, "set", "--set"),  # noqa: A002 - the flag users type
    overwrite: bool = option(PipelineConfig, "overwrite", "--overwrite"),
    num_processes: int = option(PipelineConfig, "num_processes", "--num-processes", "-n"),
    accelerate_config: Optional[str] = option(PipelineConfig, "accelerate_config", "--accelerate-config"),
    dry_run: bool = option(PipelineConfig, "dry_run", "--dry-run"),
) -> None:
    cfg = PipelineConfig(**{**locals(), "set": list(set or [])})
    from cai.train.pipeline import run_pipeline

    console = tables.console()

    def on_stage(name, kind, stage_out):
        console.rule(f"stage {name} ({kind}) -> {stage_out}")

    for result in run_pipeline(cfg, on_note=tables.note, on_stage=on_stage):
        _print_result(result)
