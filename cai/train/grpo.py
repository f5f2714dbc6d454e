"""GRPO (group relative policy optimisation) against the recipe's rewards, with TRL's GRPOTrainer.

Each prompt gets `num_generations` completions; a completion's advantage is its reward minus the
mean of its group, divided by the group's spread (`scale_rewards`). The clipped objective (`epsilon`)
and the KL penalty to the start model (`beta`) are PPO's; there is no value model. Shared parts
(rewards, prompts, trainer build) are in `cai.train.online`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.train.online import OnlineRecipe, build_online_trainer, preflight, prepare_dataset, validate

__all__ = ["GRPORecipe", "build_trainer", "preflight", "prepare_dataset", "validate"]


@dataclass
class GRPORecipe(OnlineRecipe):
    """`training:` holds trl.GRPOConfig keys (beta, epsilon, num_generations, max_completion_length, ...)."""

    kind: ClassVar[str] = "grpo"
    config_class_name: ClassVar[str] = "GRPOConfig"


def build_trainer(recipe: GRPORecipe, args, model_path: str, tokenizer, train, eval_, callbacks, *, load_kwargs):
    from trl import GRPOTrainer

    return build_online_trainer(GRPOTrainer, recipe, args, model_path, tokenizer, train, eval_, callbacks,
                                load_kwargs=load_kwargs)
