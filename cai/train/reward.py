"""Reward model: a sequence classifier with one output, trained on chosen vs rejected answers.

The margin from the recipe becomes a constant `margin` column, which TRL's
RewardTrainer subtracts inside the loss: -log sigmoid(r_chosen - r_rejected - margin).
`reward.margin: null` keeps a `margin` column the dataset already has (or none).
`reward.freeze_base: true` trains the score head only (the guide's frozen base);
`reward.dropout` sets the model's dropout probabilities and keeps dropout on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from cai.train.recipe import Recipe

# Config attributes that hold dropout probabilities across common architectures.
DROPOUT_ATTRIBUTES = ("attention_dropout", "hidden_dropout", "classifier_dropout", "resid_pdrop", "embd_pdrop",
                      "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout")


@dataclass
class RewardSection:
    """`reward:` section."""

    margin: float | None = 0.5
    freeze_base: bool = False
    dropout: float | None = 0.1


@dataclass
class RewardRecipe(Recipe):
    """`training:` holds trl.RewardConfig keys."""

    kind: ClassVar[str] = "reward"
    config_class_name: ClassVar[str] = "RewardConfig"
    default_split: ClassVar[str] = "train_prefs"
    default_eval_split: ClassVar[str | None] = "test_prefs"
    columns: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")
    section: ClassVar[str | None] = "reward"

    reward: RewardSection = field(default_factory=RewardSection)

    def section_dict(self) -> dict:
        return {"margin": self.reward.margin, "freeze_base": self.reward.freeze_base, "dropout": self.reward.dropout}


def validate(recipe: RewardRecipe, resolved: dict) -> None:
    section = recipe.reward
    if section.freeze_base and recipe.lora.enabled:
        raise recipe.error("reward.freeze_base", "true trains the score head only, which excludes LoRA; "
                           "set lora.enabled: false (LoRA already keeps the base weights frozen)")
    if section.dropout is not None:
        if not 0 <= section.dropout < 1:
            raise recipe.error("reward.dropout", f"must be in [0, 1), got {section.dropout}")
        if recipe.training.get("disable_dropout") is True:
            raise recipe.error("training.disable_dropout", "true contradicts reward.dropout; "
                               "set reward.dropout: null to train without dropout")
        resolved["disable_dropout"] = False


def prepare_dataset(recipe: RewardRecipe, dataset):
    keep = [c for c in dataset.column_names if c in ("prompt", "chosen", "rejected", "margin")]
    dataset = dataset.select_columns(keep)
    if recipe.reward.margin is not None:
        if "margin" in dataset.column_names:
            dataset = dataset.remove_columns("margin")
        margin = float(recipe.reward.margin)
        dataset = dataset.map(lambda _: {"margin": margin})
    return dataset


def build_trainer(recipe: RewardRecipe, args, model_path: str, tokenizer, train, eval_, callbacks, *, load_kwargs):
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from trl import RewardTrainer

    from cai.train.runner import lora_config

    kwargs = dict(load_kwargs)
    if recipe.reward.dropout is not None:
        config = AutoConfig.from_pretrained(model_path)
        for name in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(config, name, None), float):
                kwargs[name] = recipe.reward.dropout
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()        # the new score head is "missing" by design
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if recipe.reward.freeze_base:
        head = _head_name(model)
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head)
    return RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=eval_, processing_class=tokenizer,
                         peft_config=lora_config(recipe, "SEQ_CLS"), callbacks=callbacks)


def _head_name(model) -> str:
    for name in ("score", "classifier", "v_head"):
        if hasattr(model, name):
            return name
    raise RuntimeError(f"{type(model).__name__}: cannot find the classification head to keep trainable")
