"""The one interface every safety scorer implements.

A scorer turns a batch of texts into numeric columns (one dict per text), so
the filter, eval and report stages add scores to rows without knowing which
classifier produced them.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod

from cai.errors import CaiError


class Scorer(ABC):
    """load() once, score() many batches, close() to free memory.

    Subclasses set `name`, `columns` (the keys of every result dict) and
    `requires` ((module, install hint) pairs checked before loading), and
    implement `load()` and `_score_batch()`; `score()` does the batching.
    """

    name: str = "base"
    columns: tuple[str, ...] = ()
    requires: tuple[tuple[str, str], ...] = ()
    default_batch_size: int = 64

    @classmethod
    def check_requirements(cls) -> None:
        """Raise a one-line CaiError naming the pip command for a missing optional package."""
        for module, hint in cls.requires:
            if not _installed(module):
                raise CaiError(f"scorer {cls.name} needs the {module} package: {hint}")

    @abstractmethod
    def load(self) -> None: ...

    @property
    def loaded(self) -> bool:
        return True

    @abstractmethod
    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]: ...

    def score(self, texts: list[str], batch_size: int | None = None) -> list[dict[str, float]]:
        """Score `texts` in batches of `batch_size`; one dict of floats per text, in order."""
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise CaiError(f"scorer {self.name}: batch size must be at least 1, got {batch_size}")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise CaiError(f"scorer {self.name}: text {i} is {type(text).__name__}, not a string")
        if not texts:
            return []
        if not self.loaded:
            self.load()
        results: list[dict[str, float]] = []
        for start in range(0, len(texts), batch_size):
            results.extend(self._score_batch(texts[start:start + batch_size]))
        return results

    def close(self) -> None:
        """Free the model; scorers holding nothing need not override this."""

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
