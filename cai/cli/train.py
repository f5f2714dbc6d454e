"""`cai train`: SFT, DPO, reward-model and online RL (GRPO, RLOO) recipes on TRL + PEFT."""

from __future__ import annotations

from typing import List, Optional

import typer

from cai.cli.options import group

app = group("Train with SFT, DPO, a reward model or online RL (GRPO, RLOO) on a cai dataset.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")

_RECIPE_HELP = "Recipe YAML file or shipped name (sft, dpo, reward, grpo, rloo, smoke/dpo, ...). Default: the shipped {kind} recipe."
_SET_HELP = "Override a recipe key: --set training.learning_rate=5e-6 (repeatable; values are YAML)."


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _note(console):
    return lambda text: console.print(f"[yellow]note:[/] {text}", highlight=False, soft_wrap=True)


def _print_result(console, result) -> None:
    from cai.train.summary import summary_table

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


def _train(kind: str, recipe, data, model, out, sets, merge, overwrite, num_processes, accelerate_config, dry_run):
    from cai.train.runner import train

    console = _console()
    result = train(kind, recipe or kind, data, out, model=model, overrides=list(sets or []), merge=merge,
                   overwrite=overwrite, num_processes=num_processes, accelerate_config=accelerate_config,
                   dry_run=dry_run, on_note=_note(console))
    _print_result(console, result)


def _command(kind: str, summary: str):
    def command(
        data: str = typer.Option(..., "--data", "-d", help="Dataset folder written by `cai data pairs` (runs/NAME/dataset)."),
        recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help=_RECIPE_HELP.format(kind=kind)),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model: folder, .gguf or hub id (default: the recipe's, else the embedded SmolLM2-135M-Instruct)."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help=f"Output folder (default: next to the dataset, runs/NAME/{kind})."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help=_SET_HELP),
        merge: bool = typer.Option(False, "--merge", help="Also write merged weights (base + LoRA adapter) to OUT/merged/."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete a previous run in OUT and start over."),
        num_processes: int = typer.Option(1, "--num-processes", "-n", help="Processes for `accelerate launch` (one per GPU; on a CPU, gloo)."),
        accelerate_config: Optional[str] = typer.Option(None, "--accelerate-config", help="accelerate config: ddp, zero2, zero3, fsdp (recipes/accelerate/) or a file."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate the recipe and the data, print the resolved settings, load no model."),
    ) -> None:
        _train(kind, recipe, data, model, out, sets, merge, overwrite, num_processes, accelerate_config, dry_run)

    command.__doc__ = summary
    return command


app.command("sft", help="Supervised fine-tuning on the revisions (train_sft): the SL-CAI stage.")(
    _command("sft", "SFT"))
app.command("dpo", help="DPO on chosen vs rejected (train_prefs); LoRA reference = base with the adapter off.")(
    _command("dpo", "DPO"))
app.command("reward", help="Reward model (one-output classifier) on chosen vs rejected, with a margin; reports test accuracy.")(
    _command("reward", "reward"))
app.command("grpo", help="Online RL (GRPO) on the dataset's prompts against the recipe's rewards: reward model, "
                         "judge, toxicity, refusal.")(_command("grpo", "GRPO"))
app.command("rloo", help="Online RL (RLOO) on the dataset's prompts against the recipe's rewards: reward model, "
                         "judge, toxicity, refusal.")(_command("rloo", "RLOO"))


@app.command("pipeline", help="Chain stages (SFT -> DPO, SFT -> reward, SFT -> reward -> GRPO/RLOO): finished stages are skipped, an interrupted one resumes.")
def pipeline(
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder written by `cai data pairs` (runs/NAME/dataset)."),
    recipe: str = typer.Option("pipeline", "--recipe", "-r", help="Pipeline YAML or shipped name (pipeline, pipeline-reward, pipeline-rl, smoke/pipeline)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model of the first stage (default: the pipeline's, else the embedded model)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Folder for the stages, OUT/<stage>/ (default: the dataset's parent, runs/NAME)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: sft.training.max_steps=10 (one stage) or training.max_steps=10 (every stage)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the stages' previous runs and start over."),
    num_processes: int = typer.Option(1, "--num-processes", "-n", help="Processes for `accelerate launch` per stage."),
    accelerate_config: Optional[str] = typer.Option(None, "--accelerate-config", help="accelerate config: ddp, zero2, zero3, fsdp or a file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate every stage and the data, load no model."),
) -> None:
    from cai.train.pipeline import run_pipeline

    console = _console()

    def on_stage(name, kind, stage_out):
        console.rule(f"stage {name} ({kind}) -> {stage_out}")

    results = run_pipeline(recipe, data, out, model=model, overrides=list(sets or []), overwrite=overwrite,
                           num_processes=num_processes, accelerate_config=accelerate_config, dry_run=dry_run,
                           on_note=_note(console), on_stage=on_stage)
    for result in results:
        _print_result(console, result)
