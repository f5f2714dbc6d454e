"""Settings of `cai train KIND` and `cai train pipeline`, each with its default and help (read by the CLI).

The recipe YAML holds the training settings; these are the run's own: which
recipe, which data, where the output goes, how many processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.config import REQUIRED, at_least, setting


@dataclass(kw_only=True)
class TrainConfig:
    """One training run: a recipe on a dataset, into an output folder."""

    data: str = setting(REQUIRED, "Dataset folder written by `cai data pairs` (runs/NAME/dataset).")
    recipe: str | None = setting(None, "Recipe YAML file or shipped name (sft, dpo, reward, grpo, rloo, smoke/dpo, "
                                       "...). Default: the shipped recipe of the command's kind.")
    model: str | None = setting(None, "Base model: folder, .gguf or hub id (default: the recipe's, else the embedded "
                                      "SmolLM2-135M-Instruct).")
    out: str | None = setting(None, "Output folder (default: next to the dataset, runs/NAME/KIND).")
    set: list[str] = setting(help="Override a recipe key: --set training.learning_rate=5e-6 (repeatable; values "
                                  "are YAML).", factory=list)
    merge: bool = setting(False, "Also write merged weights (base + LoRA adapter) to OUT/merged/.")
    overwrite: bool = setting(False, "Delete a previous run in OUT and start over.")
    num_processes: int = setting(1, "Processes for `accelerate launch` (one per GPU; on a CPU, gloo).")
    accelerate_config: str | None = setting(None, "accelerate config: ddp, zero2, zero3, fsdp "
                                                  "(recipes/accelerate/) or a file.")
    dry_run: bool = setting(False, "Validate the recipe and the data, print the resolved settings, load no model.")

    def __post_init__(self) -> None:
        at_least("num_processes", self.num_processes, 1)


@dataclass(kw_only=True)
class PipelineConfig:
    """Stages chained by a pipeline recipe: finished stages are skipped, an interrupted one resumes."""

    data: str = setting(REQUIRED, "Dataset folder written by `cai data pairs` (runs/NAME/dataset).")
    recipe: str = setting("pipeline", "Pipeline YAML or shipped name (pipeline, pipeline-reward, pipeline-rl, "
                                      "smoke/pipeline).")
    model: str | None = setting(None, "Model of the first stage (default: the pipeline's, else the embedded model).")
    out: str | None = setting(None, "Folder for the stages, OUT/<stage>/ (default: the dataset's parent, runs/NAME).")
    set: list[str] = setting(help="Override: sft.training.max_steps=10 (one stage) or training.max_steps=10 "
                                  "(every stage).", factory=list)
    overwrite: bool = setting(False, "Delete the stages' previous runs and start over.")
    num_processes: int = setting(1, "Processes for `accelerate launch` per stage.")
    accelerate_config: str | None = setting(None, "accelerate config: ddp, zero2, zero3, fsdp or a file.")
    dry_run: bool = setting(False, "Validate every stage and the data, load no model.")

    def __post_init__(self) -> None:
        at_least("num_processes", self.num_processes, 1)
