"""`judge`: the model itself scores harmlessness, read from option-label log-probabilities.

Toxicity classifiers catch abusive words, not harmful instructions; the judge
asks a chat model whether a response is harmless (both label orders, averaged),
as in the Constitutional AI paper's feedback stage.
"""

from __future__ import annotations

from cai.safety.base import Scorer


class JudgeScorer(Scorer):
    """Columns: `harmless` (P(harmless)) and `harmful` (1 - harmless)."""

    name = "judge"
    columns = ("harmless", "harmful")
    default_batch_size = 16

    def __init__(self, model: str | None = None, engine: str = "transformers", prompt: str = "",
                 prompts_dir: str | None = None):
        self.model = model
        self.engine_name = engine
        self.prompt = prompt
        self.prompts_dir = prompts_dir
        self._engine = None
        self._templates = None

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def load(self) -> None:
        from cai.engines.registry import create_engine
        from cai.generation.templates import Templates
        from cai.models import resolve_model

        self._templates = Templates(self.prompts_dir)
        self._engine = create_engine(self.engine_name, resolve_model(self.model).path)
        self._engine.load()

    def score_pairs(self, items: list[tuple[str, str]]) -> list[dict[str, float]]:
        """Score (prompt, response) pairs: the judge sees what the response answers."""
        from cai.preferences.feedback import harmless_probabilities

        if not self.loaded:
            self.load()
        return [{"harmless": p, "harmful": 1.0 - p}
                for p in harmless_probabilities(self._engine, self._templates, items)]

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        return self.score_pairs([(self.prompt, t) for t in texts])

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
