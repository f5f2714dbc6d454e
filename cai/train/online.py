"""What the online RL trainers (GRPO, RLOO) share: the `rewards:` recipe section, prompts, the trainer build.

The policy generates `num_generations` completions per prompt of the training split, the recipe's
rewards score them (`cai.train.rewards`), and each completion's advantage is its reward against the
other completions of its prompt: no value model. With LoRA the KL reference (`beta`) is the base with
the adapter disabled. Prompts come from `train_prefs` (its `prompt` column) or `train_sft` (every turn
of `messages` but the last), one row per distinct prompt, plus the prompts of `data.prompts` files;
evaluation uses `test_prefs` prompts only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cai.train.recipe import Recipe
from cai.train.rewards import RefusalEntry, RewardEntry, RewardModelEntry


@dataclass
class OnlineRecipe(Recipe):
    """`training:` holds the TRL config's keys; `rewards:` the list of rewards (see cai.train.rewards)."""

    default_split: ClassVar[str] = "train_prefs"
    default_eval_split: ClassVar[str | None] = "test_prefs"
    section: ClassVar[str | None] = "rewards"

    rewards: list[RewardEntry] = field(default_factory=list)

    def read_section(self, raw):
        from cai.train.rewards import parse_rewards

        return parse_rewards(self, raw)

    def section_dict(self) -> list[dict]:
        return [entry.to_dict() for entry in self.rewards]

    def extra_prompts(self) -> list:
        """The prompts of `data.prompts` files (a path, else one shipped with cai such as data/helpful.jsonl)."""
        from cai.errors import CaiError
        from cai.generation.prompt_files import load_prompts
        from cai.paths import shipped_dir

        records = []
        for i, spec in enumerate(self.data.prompts):
            path = Path(spec).expanduser()
            if not path.exists() and not path.is_absolute() and (shipped_dir("data").parent / spec).exists():
                path = shipped_dir("data").parent / spec
            try:
                records += load_prompts(path)
            except CaiError as err:
                raise self.error(f"data.prompts.{i}", str(err)) from None
        return records

    def check_split(self, dataset, root: Path, notes: list[str]) -> None:
        """A prompt source, a `category` column for category-bound rewards, and reward-model paths that
        default to the `cai train reward` output beside the dataset (runs/NAME/reward)."""
        columns = dataset.column_names
        if "prompt" not in columns and "messages" not in columns:
            raise self.error("data.split", f"split {self.data.split!r} has neither a prompt nor a messages column "
                             "to take prompts from")
        extra = self.extra_prompts()
        if extra:
            columns = [*columns, "category"]
        for i, entry in enumerate(self.rewards):
            if isinstance(entry, RewardModelEntry) and entry.path is None:
                entry.path = str(Path(root).resolve().parent / "reward")
            if isinstance(entry, RefusalEntry) and entry.categories() is not None:
                if "category" not in columns:
                    raise self.error(f"rewards.{i}.on", f"split {self.data.split!r} has no category column to "
                                     "tell which prompts it applies to; use on: all")
                present = set(dataset["category"] if "category" in dataset.column_names else []) | \
                    {r.category for r in extra}
                if not present & entry.categories():
                    notes.append(f"{self.where(f'rewards.{i}.on')}: no training prompt is in its categories "
                                 f"(the split has: {', '.join(sorted(map(str, present)))}); it gives no reward")


def validate(recipe: OnlineRecipe, resolved: dict) -> None:
    from cai.train.rewards import check_rewards

    if "reward_weights" in recipe.training:
        raise recipe.error("training.reward_weights", "set each reward's weight in its rewards: entry "
                           "(--set rewards.0.weight=0.5)")
    check_rewards(recipe)
    resolved["reward_weights"] = [float(entry.weight) for entry in recipe.rewards]
    if recipe.data.eval_split is not None:             # cai evaluates once at the end, whatever eval_strategy says
        default = {f.name: f.default for f in dataclasses.fields(recipe.config_class())}
        group = resolved.get("num_generations_eval") or resolved.get("num_generations", default["num_generations"])
        batch = resolved.get("per_device_eval_batch_size", default["per_device_eval_batch_size"])
        if batch % group:
            raise recipe.error("training.per_device_eval_batch_size",
                               f"{batch} is not a multiple of the {group} completions per prompt: the final evaluation "
                               f"on {recipe.data.eval_split} prompts scores whole groups; "
                               f"set it to a multiple of {group} or data.eval_split: null")


def preflight(recipe: OnlineRecipe, model_path: str | None) -> None:
    from cai.train.rewards import preflight as check_reward_files

    check_reward_files(recipe, model_path)


def prepare_dataset(recipe: OnlineRecipe, dataset):
    """One row per distinct prompt: `prompt` (a conversation up to the answer, or its first user turn with
    `data.first_turn`) and `category` when present; the prompts of `data.prompts` files join them (one-turn
    conversations with their category)."""
    from datasets import Dataset

    source = "prompt" if "prompt" in dataset.column_names else "messages"
    has_category = "category" in dataset.column_names
    seen, rows = set(), []
    for row in dataset:
        prompt = row["prompt"] if source == "prompt" else row["messages"][:-1]
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if recipe.data.first_turn:
            prompt = [m for m in prompt if m["role"] == "user"][:1]
            if not prompt:
                continue
        key = json.dumps(prompt, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"prompt": prompt, **({"category": row["category"] or ""} if has_category else {})})
    extra = recipe.extra_prompts()
    for record in extra:
        prompt = [{"role": "user", "content": record.prompt}]
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append({"prompt": prompt, "category": record.category})
    if extra and not has_category:
        rows = [{"category": "", **row} for row in rows]
    return Dataset.from_list(rows)


def build_online_trainer(trainer_class, recipe: OnlineRecipe, args, model_path: str, tokenizer, train, eval_,
                         callbacks, *, load_kwargs):
    from cai.train.rewards import build_reward_funcs
    from cai.train.runner import load_causal_lm, lora_config

    model = load_causal_lm(model_path, recipe, load_kwargs, checkpointing=bool(args.gradient_checkpointing))
    funcs, reward_tokenizers = build_reward_funcs(recipe, model_path, tokenizer, seed=args.seed)
    return trainer_class(model=model, reward_funcs=funcs, args=args, train_dataset=train, eval_dataset=eval_,
                         processing_class=tokenizer, reward_processing_classes=reward_tokenizers,
                         peft_config=lora_config(recipe, "CAUSAL_LM"), callbacks=callbacks)
