"""SFT on the revisions (`train_sft`): the supervised stage (SL-CAI) of Constitutional AI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.train.recipe import Recipe


@dataclass
class SFTRecipe(Recipe):
    """`training:` holds trl.SFTConfig keys. Each `messages` row is split into prompt (all turns but the
    last) and completion (the revised answer), so by default only the answer is trained on
    (`training.completion_only_loss: false` trains on the whole conversation)."""

    kind: ClassVar[str] = "sft"
    config_class_name: ClassVar[str] = "SFTConfig"
    default_split: ClassVar[str] = "train_sft"
    default_eval_split: ClassVar[str | None] = "test_sft"
    columns: ClassVar[tuple[str, ...]] = ("messages",)


def prepare_dataset(recipe: SFTRecipe, dataset):
    """messages -> prompt + completion (conversational), other columns dropped."""
    def split(row):
        messages = row["messages"]
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    return dataset.map(split, remove_columns=dataset.column_names)


def build_trainer(recipe: SFTRecipe, args, model_path: str, tokenizer, train, eval_, callbacks, *, load_kwargs):
    from trl import SFTTrainer

    from cai.train.runner import load_causal_lm, lora_config

    model = load_causal_lm(model_path, recipe, load_kwargs, checkpointing=bool(args.gradient_checkpointing))
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=eval_, processing_class=tokenizer,
                      peft_config=lora_config(recipe, "CAUSAL_LM"), callbacks=callbacks)


def validate(recipe: SFTRecipe, resolved: dict) -> None:
    """Nothing beyond the shared checks."""
