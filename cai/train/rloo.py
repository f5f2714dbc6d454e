"""RLOO (REINFORCE leave-one-out) against the recipe's rewards, with TRL's RLOOTrainer.

Each prompt gets `num_generations` completions; a completion's baseline is the mean reward of the
other completions of its prompt. TRL 1.16's RLOO keeps PPO's clipping (`epsilon`) and puts the KL to
the start model (`beta`) into the reward; there is no value model and no entropy bonus. Shared parts
(rewards, prompts, trainer build) are in `cai.train.online`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.train.online import OnlineRecipe, build_online_trainer, preflight, prepare_dataset, validate

__all__ = ["RLOORecipe", "build_trainer", "preflight", "prepare_dataset", "validate"]


@dataclass
class RLOORecipe(OnlineRecipe):
    """`training:` holds trl.RLOOConfig keys (beta, epsilon, num_generations, normalize_advantages, ...)."""

    kind: ClassVar[str] = "rloo"
    config_class_name: ClassVar[str] = "RLOOConfig"


def build_trainer(recipe: RLOORecipe, args, model_path: str, tokenizer, train, eval_, callbacks, *, load_kwargs):
    from trl import RLOOTrainer

    return build_online_trainer(RLOOTrainer, recipe, args, model_path, tokenizer, train, eval_, callbacks,
                                load_kwargs=load_kwargs)
