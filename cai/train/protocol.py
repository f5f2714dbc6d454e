"""What a trainer module (`cai/train/sft.py`, `dpo.py`, `reward.py`, `grpo.py`, `rloo.py`) provides.

The runner knows training methods only through this contract, so adding one
is a new module beside the others, a recipe class, and a line in
`cai.train.recipe.RECIPES`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TrainerModule(Protocol):
    """One training method: its recipe checks, its dataset preparation, its TRL trainer."""

    def validate(self, recipe: Any, resolved: dict) -> None:
        """Checks across keys the TRL config class cannot make (raise CaiError); no model is loaded yet."""

    def prepare_dataset(self, recipe: Any, dataset: Any) -> Any:
        """The split as the trainer takes it (columns renamed, prompts extracted, ...)."""

    def build_trainer(self, recipe: Any, args: Any, model_path: str, tokenizer: Any, train: Any, eval_: Any,
                      callbacks: list, *, load_kwargs: dict) -> Any:
        """The TRL trainer, ready for `.train()`."""


class Preflight(Protocol):
    """Optional: `preflight(recipe, model_path)` checks files an earlier stage writes (a reward model ...)."""

    def __call__(self, recipe: Any, model_path: str | None) -> None: ...
