"""One training run, shared by `cai train sft|dpo|reward|grpo|rloo` and the pipeline.

validate (recipe, TRL config, data, out dir) -> [accelerate launch] -> execute in each process:
load model + tokenizer, TRL trainer, train (resuming from the last checkpoint), final eval, save the
adapter or full model, then on the main process: merged weights, summary.json, README.md model card,
and `.cai-complete` last, so a run without it is known to be unfinished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.dataset_folder import open_dataset
from cai.errors import CaiError
from cai.io import read_json, versions, write_atomic
from cai.train.config import TrainConfig
from cai.train.protocol import TrainerModule
from cai.train.recipe import Recipe, checkpointing_key, load_recipe, recipe_class
from cai.train.summary import flatten

COMPLETE = ".cai-complete"
CONFIG = "config.yaml"
PLAN = ".launch-plan.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class RunPlan:
    """Everything a (launched) process needs to run; JSON-serialisable."""

    kind: str
    recipe: str
    data: str
    out: str
    model: str | None = None          # a resolved local path (or hub id)
    model_name: str = ""
    model_source: str = ""
    overrides: list[str] = field(default_factory=list)
    merge: bool = False
    resume_from: str | None = None
    command: str = ""
    base: str | None = None            # folder for relative recipe paths (pipeline stages)


@dataclass
class TrainResult:
    kind: str
    out: Path
    summary: dict | None = None
    resumed_from: str | None = None
    skipped: bool = False               # a finished run found in --out (pipeline reruns)
    dry_run: bool = False
    resolved: dict | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Checked:
    """A validated run: recipe, resolved `training:` keys, data facts, notes for the user."""

    recipe: Recipe
    resolved: dict
    data: dict
    notes: list[str]


def kind_module(kind: str) -> TrainerModule:
    """The trainer module of `kind`: the module that holds its recipe class."""
    return importlib.import_module(recipe_class(kind).__module__)


# --- validation ----------------------------------------------------------------------------

def check(kind: str | None, recipe_spec, data, *, overrides=(), base: Path | None = None) -> Checked:
    """Everything that can be checked without loading a model (kind None: the recipe's own `kind:`)."""
    recipe = load_recipe(recipe_spec, kind, list(overrides), base=base)
    notes: list[str] = []
    resolved = resolve_training(recipe, notes)
    kind_module(recipe.kind).validate(recipe, resolved)
    check_lora(recipe)
    build_args(recipe, resolved, "/nonexistent-cai-validation")      # cross-field checks of TRL itself
    return Checked(recipe, resolved, check_data(recipe, data, notes), notes)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_training(recipe: Recipe, notes: list[str]) -> dict:
    """Fill `auto` switches from the hardware; on a CPU force fp32 and use_cpu (with a note)."""
    t = dict(recipe.training)
    ckpt = checkpointing_key(recipe.config_class())
    if ckpt == "activation_checkpointing" and "gradient_checkpointing" in t:
        if "activation_checkpointing" not in t:
            t["activation_checkpointing"] = t["gradient_checkpointing"]
        notes.append(f"{recipe.where('training.gradient_checkpointing')}: deprecated alias in transformers 5; "
                     "read as training.activation_checkpointing")
        del t["gradient_checkpointing"]
    if _cuda():
        import torch

        bf16_ok = torch.cuda.is_bf16_supported()
        if t.get("bf16", "auto") == "auto":
            t["bf16"] = bf16_ok and t.get("fp16") is not True
        if t.get("fp16", "auto") == "auto":
            t["fp16"] = not t["bf16"]
        if t.get(ckpt, "auto") == "auto":
            t[ckpt] = True
    else:
        asked = [key for key in ("bf16", "fp16") if t.get(key) is True]
        for key in asked:
            notes.append(f"{recipe.where('training.' + key)}: true ignored: "
                         "no GPU visible, training in fp32 on the CPU")
        t["bf16"] = t["fp16"] = False
        t["use_cpu"] = True
        if t.get(ckpt, "auto") == "auto":
            t[ckpt] = False
        if not asked:
            notes.append("no GPU visible: training on the CPU in fp32 (use_cpu), activation checkpointing "
                         f"{'on' if t[ckpt] else 'off'}")
        t.setdefault("dataloader_pin_memory", False)
    if recipe.lora.enabled:
        t.setdefault("ddp_find_unused_parameters", False)   # every adapter weight takes part in the forward
    t.setdefault("report_to", "none")
    if "disable_tqdm" not in t:
        t["disable_tqdm"] = True                   # cai shows TRL's rich progress instead (or plain log lines)
    return t


def check_lora(recipe: Recipe) -> None:
    lora = recipe.lora
    if lora.qlora:
        import importlib.util

        if not lora.enabled:
            raise recipe.error("lora.qlora", "QLoRA trains a LoRA adapter: set lora.enabled: true")
        if not _cuda():
            raise recipe.error("lora.qlora", "QLoRA needs a CUDA GPU and none is visible; set lora.qlora: false")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise recipe.error("lora.qlora", "QLoRA needs the bitsandbytes package: pip install bitsandbytes")


def build_args(recipe: Recipe, resolved: dict, out) -> Any:
    """The TRL config instance; its own checks become one line naming the recipe."""
    import warnings

    cls = recipe.config_class()
    values = {k: v for k, v in resolved.items() if k != "model_init_kwargs"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return cls(output_dir=str(out), **values)
    except (ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CaiError(f"{recipe.path}: training: {cls.__name__} refused the settings: {first}") from None


def check_data(recipe: Recipe, data, notes: list[str]) -> dict:
    dd, root = open_dataset(data)
    available = ", ".join(dd.keys())
    split = recipe.data.split
    if split not in dd:
        raise recipe.error("data.split", f"split {split!r} not in the dataset {data} (it has: {available})")
    if len(dd[split]) == 0:
        raise recipe.error("data.split", f"split {split!r} of {data} is empty: nothing to train on")
    missing = [c for c in recipe.columns if c not in dd[split].column_names]
    if missing:
        raise recipe.error("data.split", f"split {split!r} of {data} lacks the column(s) {', '.join(missing)} "
                           f"that a {recipe.kind} recipe needs")
    recipe.check_split(dd[split], root, notes)
    eval_split = recipe.data.eval_split
    eval_rows = 0
    if eval_split is not None:
        if eval_split not in dd:
            raise recipe.error("data.eval_split", f"split {eval_split!r} not in the dataset {data} "
                               f"(it has: {available}); set data.eval_split: null to skip evaluation")
        eval_rows = len(dd[eval_split])
        if eval_rows == 0:
            notes.append(f"{data}: split {eval_split!r} is empty: no evaluation")
    card = root / "README.md"
    return {"path": str(root.resolve()), "split": split, "eval_split": eval_split, "train_rows": len(dd[split]),
            "eval_rows": eval_rows,
            "card_sha256": hashlib.sha256(card.read_bytes()).hexdigest()[:16] if card.is_file() else None}


# --- the output folder ---------------------------------------------------------------------

def run_identity(checked: Checked, model_path: str | None) -> dict:
    """What must match for a checkpoint in --out to be resumed."""
    ident = checked.recipe.to_dict()
    ident["training"] = {k: checked.resolved[k] for k in sorted(checked.resolved)}
    ident["model"] = model_path
    ident["data"] = {"path": checked.data["path"], "split": checked.data["split"],
                     "eval_split": checked.data["eval_split"]}
    return json.loads(json.dumps(ident, default=str))


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json, written last, parses)."""
    if not out.is_dir():
        return None
    found = []
    for child in out.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            try:
                json.loads((child / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue                              # killed while saving: not usable
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def out_state(out: Path, identity: dict, *, overwrite: bool) -> tuple[str, Path | None]:
    """('new' | 'done' | 'resume' | 'restart', checkpoint). Deletes a cai output when overwrite."""
    if not out.exists() or not any(out.iterdir()):
        return "new", None
    config = out / CONFIG
    if not config.is_file():
        raise CaiError(f"{out}: exists and is not a cai training output (no {CONFIG}); choose another --out")
    if overwrite:
        shutil.rmtree(out)
        return "new", None
    if (out / COMPLETE).is_file():
        return "done", None
    ckpt = last_checkpoint(out)
    old = _read_identity(config)
    if old != identity:
        if ckpt is not None:
            raise CaiError(f"{out}: holds checkpoints of a different run ({identity_diff(old, identity)}); "
                           "pass --overwrite to start over or choose another --out")
        return "restart", None
    return ("resume", ckpt) if ckpt is not None else ("restart", None)


def identity_diff(old: dict | None, new: dict) -> str:
    """The first setting that differs, as `key: old then, new now`."""
    a, b = flatten(old or {}), flatten(new)
    key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)
    return "unreadable config.yaml" if key is None else f"{key}: {a.get(key)!r} then, {b.get(key)!r} now"


def _read_identity(config: Path) -> dict | None:
    from ruamel.yaml import YAML

    try:
        doc = YAML(typ="safe").load(config.read_text(encoding="utf-8")) or {}
    except Exception:                                  # a torn file: treat as a different run
        return None
    return json.loads(json.dumps(doc.get("run"), default=str)) if isinstance(doc, dict) else None


def write_config(out: Path, plan: RunPlan, checked: Checked, identity: dict) -> None:
    from ruamel.yaml import YAML

    from cai import __version__

    doc = {
        "cai_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": plan.command,
        "kind": plan.kind,
        "recipe": str(Path(checked.recipe.path).resolve()),
        "overrides": list(plan.overrides),
        "model": {"path": plan.model, "name": plan.model_name, "source": plan.model_source},
        "data": checked.data,
        "notes": list(checked.notes),
        "versions": versions(*TRAIN_VERSIONS),
        "fingerprint": fingerprint(identity),
        "run": identity,
    }
    from io import StringIO

    buf = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.dump(doc, buf)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CONFIG, buf.getvalue())


# Packages whose versions a training run records.
TRAIN_VERSIONS = ("cai", "trl", "transformers", "peft", "accelerate", "torch", "datasets")


# --- the public entry ----------------------------------------------------------------------

def default_out(kind: str, data) -> Path:
    """runs/NAME/dataset -> runs/NAME/<kind>."""
    return Path(data).expanduser().resolve().parent / kind


def train(kind: str, cfg: TrainConfig, *, skip_done: bool = False, base: Path | None = None,
          on_note=None) -> TrainResult:
    """Validate, then train in this process or through `accelerate launch`.

    `cfg.model`: a path, .gguf file or hub id; None takes the recipe's `model:`, then the embedded default.
    `cfg.set`: `section.key=value` overrides. `cfg.merge`: also write OUT/merged/ (LoRA).
    `skip_done`: a finished run in `out` is returned as skipped instead of refused (pipeline reruns).
    """
    recipe, data, model, overrides = cfg.recipe or kind, cfg.data, cfg.model, list(cfg.set)
    merge, overwrite, dry_run = cfg.merge, cfg.overwrite, cfg.dry_run
    num_processes, accelerate_config = cfg.num_processes, cfg.accelerate_config
    out = cfg.out
    from cai.models import resolve_model
    from cai.train import launch
    from cai.train.summary import command_line

    note = on_note or (lambda text: None)
    checked = check(kind, recipe, data, overrides=overrides, base=base)
    preflight = getattr(kind_module(checked.recipe.kind), "preflight", None)   # checks of files other stages write
    preset = launch.check_preset(accelerate_config) if accelerate_config else None
    out = Path(out).expanduser() if out is not None else default_out(kind, data)
    if not dry_run and out.exists() and any(out.iterdir()) and not (out / CONFIG).is_file():
        raise CaiError(f"{out}: exists and is not a cai training output (no {CONFIG}); choose another --out")
    ref = None if dry_run else resolve_model(model if model is not None else checked.recipe.model)
    if preflight:
        preflight(checked.recipe, ref.path if ref else None)
    for text in checked.notes:                  # only once everything checkable is valid
        note(text)
    if dry_run:
        return TrainResult(kind, out, dry_run=True, resolved=checked.recipe.to_dict() | {"training": checked.resolved},
                           notes=checked.notes)
    identity = run_identity(checked, ref.path)
    state, ckpt = out_state(out, identity, overwrite=overwrite)
    if state == "done":
        if skip_done:
            old = _read_identity(out / CONFIG)
            if old != identity:
                note(f"{out}: finished with other settings ({identity_diff(old, identity)}); kept as it is, "
                     "--overwrite trains it again")
            return TrainResult(kind, out, summary=read_json(out / "summary.json"), skipped=True)
        raise CaiError(f"{out}: already holds a finished {kind} run; "
                       "pass --overwrite to train again or choose another --out")
    if state == "restart":
        for leftover in ("metrics.jsonl", "summary.json"):
            (out / leftover).unlink(missing_ok=True)
    plan = RunPlan(kind=kind, recipe=str(Path(checked.recipe.path).resolve()), data=str(data), out=str(out),
                   model=ref.path, model_name=ref.name, model_source=ref.source, overrides=list(overrides),
                   merge=merge, resume_from=str(ckpt) if ckpt else None, command=command_line(),
                   base=str(base) if base else None)
    if merge and not checked.recipe.lora.enabled:
        note("--merge: lora.enabled is false, so OUT already holds the full model; nothing to merge")
    write_config(out, plan, checked, identity)
    if ckpt is not None:
        note(f"{out}: resuming from {ckpt.name}")
    if num_processes > 1 or preset is not None:
        (out / PLAN).write_text(json.dumps(dataclasses.asdict(plan), indent=1))
        launch.run_launched(out / PLAN, num_processes=num_processes, preset=preset)
        summary = read_json(out / "summary.json")
        if summary is None:
            raise CaiError(f"{out}: the launched run ended without writing summary.json")
    else:
        summary = execute(plan, checked=checked)
    return TrainResult(kind, out, summary=summary, resumed_from=plan.resume_from, notes=checked.notes)


# --- execution (every process) -------------------------------------------------------------

def load_tokenizer(model_path: str, ref_name: str = ""):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if not getattr(tokenizer, "chat_template", None):
        raise CaiError(f"model {ref_name or model_path}: the tokenizer has no chat template, and cai's datasets are "
                       "conversations; use an instruct model or put a chat_template.jinja in the model folder")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_load_kwargs(recipe: Recipe, resolved: dict) -> dict:
    """dtype (bf16 for a frozen LoRA base under bf16, else fp32) and QLoRA quantisation."""
    import torch

    kwargs = dict(resolved.get("model_init_kwargs") or {})
    half = torch.bfloat16 if resolved.get("bf16") else torch.float16 if resolved.get("fp16") else None
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = half if (half is not None and recipe.lora.enabled) else torch.float32
    if recipe.lora.qlora:
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=half or torch.bfloat16)
        kwargs["device_map"] = {"": PartialState().local_process_index}
        kwargs["dtype"] = half or torch.bfloat16
    return kwargs


def load_causal_lm(model_path: str, recipe: Recipe, load_kwargs: dict, *, frozen: bool = False,
                   checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    kwargs = dict(load_kwargs)
    if frozen:
        kwargs.pop("quantization_config", None)
        kwargs.pop("device_map", None)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if frozen:
        model.eval().requires_grad_(False)
    elif recipe.lora.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing)
    return model


def lora_config(recipe: Recipe, task_type: str):
    if not recipe.lora.enabled:
        return None
    from peft import LoraConfig

    lora = recipe.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      modules_to_save=lora.modules_to_save, task_type=task_type, bias="none")


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def execute(plan: RunPlan, *, checked: Checked | None = None, launched: bool = False) -> dict | None:
    """Train in this process (one of many under accelerate); returns the summary on the main process."""
    import warnings

    with warnings.catch_warnings():
        # transformers 5 deprecations that TRL itself triggers: nothing a recipe can change
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*(deprecated|will be removed).*")
        return _execute(plan, checked=checked)


def _execute(plan: RunPlan, *, checked: Checked | None) -> dict | None:
    import torch
    import transformers
    from transformers import PrinterCallback, set_seed

    from cai.train import summary as S

    if not _is_tty():
        transformers.utils.logging.disable_progress_bar()

    if checked is None:
        checked = check(plan.kind, plan.recipe, plan.data, overrides=plan.overrides,
                        base=Path(plan.base) if plan.base else None)
    recipe, resolved = checked.recipe, checked.resolved
    module = kind_module(plan.kind)
    out = Path(plan.out)
    args = build_args(recipe, resolved, out)
    set_seed(args.seed)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ and args.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.world_size))

    dd, _ = open_dataset(plan.data)
    tokenizer = load_tokenizer(plan.model, plan.model_name)
    train_ds = module.prepare_dataset(recipe, dd[recipe.data.split])
    eval_ds = None
    if recipe.data.eval_split is not None and len(dd[recipe.data.eval_split]) > 0:
        eval_ds = module.prepare_dataset(recipe, dd[recipe.data.eval_split])
    else:
        args.eval_strategy = "no"

    metrics_path = out / "metrics.jsonl"
    callbacks = [S.make_metrics_callback(metrics_path)]
    rich_progress = _is_tty() and "disable_tqdm" not in recipe.training
    if rich_progress:
        from trl import RichProgressCallback

        callbacks.append(RichProgressCallback())
    rss_before_model = S.current_rss_mib()
    trainer = module.build_trainer(recipe, args, plan.model, tokenizer, train_ds, eval_ds, callbacks,
                                   load_kwargs=model_load_kwargs(recipe, resolved))
    if rich_progress:
        trainer.remove_callback(PrinterCallback)
    main = trainer.is_world_process_zero()
    if plan.resume_from and main:
        state = json.loads((Path(plan.resume_from) / "trainer_state.json").read_text())
        S.trim_log(metrics_path, int(state.get("global_step") or 0))
        S.append_event(metrics_path, {"event": "resume", "checkpoint": Path(plan.resume_from).name,
                                      "global_step": state.get("global_step")})
    trainer.train(resume_from_checkpoint=plan.resume_from)

    if rich_progress:                  # TRL's rich bars end with training; the final eval runs without them
        from trl import RichProgressCallback

        trainer.remove_callback(RichProgressCallback)
    eval_metrics = {}
    if eval_ds is not None:
        done = [row for row in trainer.state.log_history
                if "eval_loss" in row and row.get("step") == trainer.state.global_step]
        eval_metrics = dict(done[-1]) if done else trainer.evaluate()
    trainer.save_model(str(out))
    adapter = recipe.lora.enabled
    merged = None
    if main:
        if plan.merge and adapter:
            merged = merge_adapter(trainer, recipe, plan, out, tokenizer)
        summary = S.summarize(plan.kind, trainer.state.log_history, eval_metrics=eval_metrics, extra={
            "world_size": args.world_size, "out": str(out), "merged": str(merged) if merged else None,
            "resumed_from": Path(plan.resume_from).name if plan.resume_from else None,
            "model": plan.model_name, "adapter": adapter, "rss_before_model_mib": rss_before_model})
        write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        resolved_view = recipe.to_dict() | {"model": plan.model, "training": {k: resolved[k] for k in sorted(resolved)}}
        (out / "README.md").write_text(S.model_card(
            kind=plan.kind, base={"name": plan.model_name, "path": plan.model, "source": plan.model_source},
            data=checked.data, recipe=recipe.path, resolved=json.loads(json.dumps(resolved_view, default=str)),
            summary=summary, adapter=adapter, command=plan.command, versions=versions(*TRAIN_VERSIONS)),
            encoding="utf-8")
        (out / PLAN).unlink(missing_ok=True)
        write_atomic(out / COMPLETE, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    trainer.accelerator.wait_for_everyone()
    if trainer.args.world_size > 1:
        trainer.accelerator.end_training()
    return summary if main else None


def merge_adapter(trainer, recipe: Recipe, plan: RunPlan, out: Path, tokenizer) -> Path:
    """OUT/merged/: base + adapter folded into plain weights (merge_and_unload), written atomically."""
    target = out / "merged"
    tmp = out / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if recipe.lora.qlora:                      # a 4-bit base cannot take the merge: reload it in 16 bit
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        auto = AutoModelForSequenceClassification if plan.kind == "reward" else AutoModelForCausalLM
        extra = {"num_labels": 1} if plan.kind == "reward" else {}
        base = auto.from_pretrained(plan.model, dtype=torch.bfloat16, **extra)
        model = PeftModel.from_pretrained(base, str(out))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    return target
