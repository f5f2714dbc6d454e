"""DPO on chosen (revised) vs rejected (original) answers, with TRL's DPOTrainer.

With LoRA the reference model is the base with the adapter disabled: no second
copy of the weights in memory. Without LoRA TRL keeps a frozen copy of the start
model as the reference. `training.precompute_ref_log_probs: true` computes the
reference log-probs once before training. `dpo.ref_model: PATH` loads a separate
reference model instead (for example the SFT model when the policy starts elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from cai.errors import CaiError
from cai.train.recipe import Recipe


@dataclass
class DPOSection:
    """`dpo:` section: an optional separate reference model (null = the default reference)."""

    ref_model: str | None = None


@dataclass
class DPORecipe(Recipe):
    """`training:` holds trl.DPOConfig keys (beta, loss_type, precompute_ref_log_probs, ...)."""

    kind: ClassVar[str] = "dpo"
    config_class_name: ClassVar[str] = "DPOConfig"
    default_split: ClassVar[str] = "train_prefs"
    default_eval_split: ClassVar[str | None] = "test_prefs"
    columns: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")
    section: ClassVar[str | None] = "dpo"

    dpo: DPOSection = field(default_factory=DPOSection)

    def section_dict(self) -> dict:
        return {"ref_model": self.dpo.ref_model}


def validate(recipe: DPORecipe, resolved: dict) -> None:
    if recipe.lora.enabled and resolved.get("sync_ref_model"):
        raise recipe.error("training.sync_ref_model", "TRL cannot sync a reference model while training a LoRA "
                           "adapter (the reference is the base with the adapter disabled); set lora.enabled: false")
    if recipe.dpo.ref_model is not None:
        from cai.models import resolve_model

        try:
            resolve_model(recipe.dpo.ref_model)
        except CaiError as err:
            raise recipe.error("dpo.ref_model", str(err)) from None


def prepare_dataset(recipe: DPORecipe, dataset):
    keep = [c for c in dataset.column_names if c in ("prompt", "chosen", "rejected")]
    return dataset.select_columns(keep)


def build_trainer(recipe: DPORecipe, args, model_path: str, tokenizer, train, eval_, callbacks, *, load_kwargs):
    from trl import DPOTrainer

    from cai.models import resolve_model
    from cai.train.runner import load_causal_lm, lora_config

    model = load_causal_lm(model_path, recipe, load_kwargs, checkpointing=bool(args.gradient_checkpointing))
    ref_model = None
    if recipe.dpo.ref_model is not None:
        ref_model = load_causal_lm(resolve_model(recipe.dpo.ref_model).path, recipe, load_kwargs, frozen=True)
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train, eval_dataset=eval_,
                      processing_class=tokenizer, peft_config=lora_config(recipe, "CAUSAL_LM"), callbacks=callbacks)
