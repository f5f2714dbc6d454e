"""SFT -> DPO, SFT -> reward model, SFT -> reward model -> GRPO/RLOO: stage by stage, resumable.

Each stage is an ordinary `cai train KIND` run into OUT/<stage>/. Before the first stage
trains, every stage's recipe is validated. A finished stage (its `.cai-complete`) is
skipped on rerun; an interrupted stage resumes from its last complete checkpoint. A stage
with `from: NAME` starts from that stage's weights: its merged LoRA weights (`merged/`,
written because a later stage needs them) or its full model. An online RL stage rewards with
a reward stage's output (`reward_model: NAME`, default: the one reward stage before it): its
`{type: reward-model}` entries without a path get OUT/NAME.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cai.errors import CaiError
from cai.train.config import PipelineConfig
from cai.train.recipe import parse_override, read_yaml, resolve_recipe_path

# Stage names may be "dpo" or "reward": in --set a stage name wins (`dpo.dpo.ref_model=...` for the section).
_RESERVED = {"kind", "model", "description", "data", "training", "lora", "stages", "rewards"}
_STAGE_KEYS = ("name", "recipe", "from", "set", "merge", "reward_model")


@dataclass
class Stage:
    name: str
    recipe: str
    source: str | None = None            # `from:` an earlier stage
    overrides: list[str] = field(default_factory=list)
    merge: bool = False
    reward_model: str | None = None      # an earlier reward stage whose output an online RL stage rewards with


@dataclass
class PipelineRecipe:
    path: str
    model: str | None
    stages: list[Stage]


def load_pipeline(spec, overrides=()) -> PipelineRecipe:
    """Read and check a pipeline file; CLI overrides go to one stage (`sft.training.x=1`) or all (`training.x=1`)."""
    path = resolve_recipe_path(spec)
    doc, lines = read_yaml(path)

    def err(key: str, message: str) -> CaiError:
        line = lines.get(key)
        return CaiError(f"{path}{f':{line}' if line else ''}: {key}: {message}")

    if doc.get("kind") != "pipeline":
        raise err("kind", f"expected `kind: pipeline` here, got {doc.get('kind')!r}; "
                  "for a single trainer use `cai train sft|dpo|reward`")
    for key in doc:
        if key not in ("kind", "model", "description", "stages"):
            raise err(key, "unknown key in a pipeline recipe; expected kind, model, description, stages")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise err("model", "expected a path, a .gguf file, a hub id or null")
    raw = doc.get("stages")
    if not isinstance(raw, list) or not raw:
        raise err("stages", "expected a list of stages ({name, recipe, from})")
    stages: list[Stage] = []
    for i, item in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(item, dict):
            raise err("stages", f"{where}: expected a mapping with name, recipe and optionally from, set, merge, "
                      "reward_model")
        unknown = [k for k in item if k not in _STAGE_KEYS]
        if unknown:
            raise err("stages", f"{where}.{unknown[0]}: unknown key; expected {', '.join(_STAGE_KEYS)}")
        name, recipe = item.get("name"), item.get("recipe")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w-]*", name) or name in _RESERVED:
            raise err("stages", f"{where}.name: expected a folder-safe name that is not a recipe section, got {name!r}")
        if any(s.name == name for s in stages):
            raise err("stages", f"{where}.name: duplicate stage name {name!r}")
        if not isinstance(recipe, str):
            raise err("stages", f"{where}.recipe: expected a recipe file or shipped name")
        source = item.get("from")
        if source is not None and source not in [s.name for s in stages]:
            raise err("stages", f"{where}.from: {source!r} is not an earlier stage "
                      f"({', '.join(s.name for s in stages) or 'none before it'})")
        sets = item.get("set") or {}
        if not isinstance(sets, dict):
            raise err("stages", f"{where}.set: expected a mapping of dotted keys to values")
        merge = item.get("merge", False)
        if not isinstance(merge, bool):
            raise err("stages", f"{where}.merge: expected true or false")
        reward_model = item.get("reward_model")
        if reward_model is not None and reward_model not in [s.name for s in stages]:
            raise err("stages", f"{where}.reward_model: {reward_model!r} is not an earlier stage "
                      f"({', '.join(s.name for s in stages) or 'none before it'})")
        stages.append(Stage(name, recipe, source, [f"{k}={json.dumps(v)}" for k, v in sets.items()], merge,
                            reward_model))
    names = {s.name for s in stages}
    for text in overrides:
        key, _ = parse_override(text)
        head, _, rest = key.partition(".")
        if key == "model":
            model = parse_override(text)[1]
        elif head in names:
            if not rest:
                raise CaiError(f"--set {text}: name a key inside stage {head}, e.g. {head}.training.max_steps=10")
            next(s for s in stages if s.name == head).overrides.append(text[len(head) + 1:])
        else:
            for stage in stages:
                stage.overrides.append(text)
    return PipelineRecipe(str(path), model, stages)


def stage_model(out: Path) -> str:
    """The weights a later stage starts from: merged/ if present, else a full model, else merge now."""
    if (out / "merged" / "config.json").is_file():
        return str(out / "merged")
    if (out / "config.json").is_file():
        return str(out)
    if (out / "adapter_config.json").is_file():
        return str(merge_saved_adapter(out))
    raise CaiError(f"{out}: holds no model to continue from (no merged/, config.json or adapter)")


def merge_saved_adapter(out: Path) -> Path:
    """Merge OUT's adapter into its base (named in adapter_config.json) into OUT/merged/."""
    import os
    import shutil

    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = PeftConfig.from_pretrained(str(out)).base_model_name_or_path
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out)).merge_and_unload()
    tmp = out / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(tmp))
    os.rename(tmp, out / "merged")
    return out / "merged"


def bind_reward_model(pipe: PipelineRecipe, stage: Stage, checked: dict, root: Path, base: Path) -> None:
    """Point an online RL stage's reward-model entries without a path at a reward stage's output folder."""
    from cai.train.recipe import ONLINE_KINDS, load_recipe

    recipe = load_recipe(stage.recipe, None, stage.overrides, base=base)
    if recipe.kind not in ONLINE_KINDS:
        if stage.reward_model is not None:
            raise CaiError(f"{pipe.path}: reward_model: only online RL stages (grpo, rloo) take one")
        return
    open_entries = [i for i, e in enumerate(recipe.rewards) if e.type == "reward-model" and e.path is None]
    reward_stages = [name for name, c in checked.items() if c.recipe.kind == "reward"]
    source = stage.reward_model
    if source is None:
        if not open_entries or len(reward_stages) != 1:
            return                      # explicit paths, or no single reward stage to take one from
        source = reward_stages[0]
    if source not in reward_stages:
        raise CaiError(f"{pipe.path}: reward_model: {source} is not a reward stage")
    if not open_entries:
        raise CaiError(f"{pipe.path}: reward_model: {source}, but {recipe.path} has no "
                       "{type: reward-model} reward without a path to give it to")
    stage.overrides += [f"rewards.{i}.path={json.dumps(str((root / source).resolve()))}" for i in open_entries]


def run_pipeline(cfg: PipelineConfig, *, on_note=None, on_stage=None) -> list:
    """Validate every stage, then run them in order; returns one TrainResult per stage."""
    from cai.train import launch
    from cai.train.config import TrainConfig
    from cai.train.runner import TrainResult, check, train

    recipe, data, out, model, overrides = cfg.recipe, cfg.data, cfg.out, cfg.model, list(cfg.set)
    overwrite, num_processes = cfg.overwrite, cfg.num_processes
    accelerate_config, dry_run = cfg.accelerate_config, cfg.dry_run

    note = on_note or (lambda text: None)
    pipe = load_pipeline(recipe, overrides)
    base = Path(pipe.path).parent
    root = Path(out).expanduser() if out is not None else Path(data).expanduser().resolve().parent
    checked = {}
    for stage in pipe.stages:
        try:
            bind_reward_model(pipe, stage, checked, root, base)
            checked[stage.name] = check(None, stage.recipe, data, overrides=stage.overrides, base=base)
        except CaiError as err:
            raise CaiError(f"stage {stage.name}: {err}") from None
        if stage.source is not None and checked[stage.source].recipe.kind == "reward":
            raise CaiError(f"{pipe.path}: stage {stage.name}: from: {stage.source} is a reward model; "
                           "a stage can only continue from a policy stage (sft, dpo, grpo, rloo)")
    if accelerate_config:
        launch.check_preset(accelerate_config)
    if dry_run:
        return [TrainResult(checked[s.name].recipe.kind, root / s.name, dry_run=True,
                            resolved=checked[s.name].recipe.to_dict() | {"training": checked[s.name].resolved},
                            notes=checked[s.name].notes) for s in pipe.stages]
    feeds = {s.source for s in pipe.stages if s.source}
    results = []
    for stage in pipe.stages:
        recipe_ = checked[stage.name].recipe
        stage_out = root / stage.name
        if stage.source is not None:
            stage_model_spec = stage_model(root / stage.source)
        else:
            stage_model_spec = model if model is not None else pipe.model if pipe.model is not None else recipe_.model
        if on_stage:
            on_stage(stage.name, recipe_.kind, stage_out)
        try:
            stage_cfg = TrainConfig(data=data, recipe=stage.recipe, out=stage_out, model=stage_model_spec,
                                    set=list(stage.overrides), merge=stage.merge or (stage.name in feeds),
                                    overwrite=overwrite, num_processes=num_processes,
                                    accelerate_config=accelerate_config)
            result = train(recipe_.kind, stage_cfg, skip_done=True, base=base, on_note=note)
        except CaiError as err:
            raise CaiError(f"stage {stage.name}: {err}") from None
        if result.skipped:
            note(f"stage {stage.name}: already finished in {stage_out}, skipped")
        results.append(result)
    return results
