"""`bias`: the alignment guide's keyword heuristic for stereotyping language.

The guide counts how many of a few indicator words appear (each at most once),
scores min(1, count/5) and flags count > 2. We keep those semantics but match
whole words and phrases (so "nevertheless" is not "never"), case-insensitively,
with an optional plural "s" ("stereotypes"). It is a cheap tripwire, not a
classifier: it runs on every row and costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cai.errors import CaiError
from cai.safety.base import Scorer

DEFAULT_INDICATORS = ("always", "never", "all women", "all men", "stereotype", "typical", "naturally")
SATURATE_AT = 5      # count at which the score reaches 1.0
BIASED_ABOVE = 2     # count > this flags the text


def _pattern(indicator: str) -> re.Pattern:
    words = indicator.lower().split()
    if not words:
        raise CaiError("bias indicators must not be empty")
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}s?(?!\w)", re.IGNORECASE)


class BiasScorer(Scorer):
    """Columns: `bias_count` (distinct indicators found), `bias` (0..1), `biased` (1.0 if count > 2)."""

    name = "bias"
    columns = ("bias_count", "bias", "biased")
    default_batch_size = 1024

    def __init__(self, indicators: Iterable[str] | None = None):
        if isinstance(indicators, str):
            indicators = [part.strip() for part in indicators.split(",")]
        self.indicators = tuple(DEFAULT_INDICATORS if indicators is None else indicators)
        self._patterns = [_pattern(ind) for ind in self.indicators]

    def load(self) -> None:
        """Nothing to load: the patterns are compiled in __init__."""

    def count(self, text: str) -> int:
        return sum(1 for pattern in self._patterns if pattern.search(text))

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        results = []
        for text in texts:
            n = self.count(text)
            results.append({"bias_count": float(n), "bias": min(1.0, n / SATURATE_AT),
                            "biased": float(n > BIASED_ABOVE)})
        return results
