"""Scorers by name, imported only when chosen, so optional packages stay optional."""

from __future__ import annotations

import inspect

from cai.errors import CaiError
from cai.plugins import load_class
from cai.safety.base import Scorer

# name -> "module:Class". The AI-feedback `judge` scorer registers here too.
SCORERS: dict[str, str] = {
    "toxic-bilstm": "cai.safety.bilstm:ToxicBiLSTMScorer",
    "detoxify": "cai.safety.detoxify_scorer:DetoxifyScorer",
    "bias": "cai.safety.bias:BiasScorer",
    "judge": "cai.safety.judge:JudgeScorer",
    "embedding": "cai.safety.embedding:EmbeddingScorer",     # prompt similarity, for the off-topic rule
}

# Ships its weights on PyPI, so it works offline: the toxicity scorer by default.
DEFAULT_SCORER = "toxic-bilstm"
# A text above this toxicity counts as toxic: the alignment guide's `check_toxicity` cut-off.
TOXIC_AT = 0.7


def scorer_class(name: str) -> type[Scorer]:
    """The class registered as `name`, imported on demand."""
    return load_class("scorer", name, SCORERS)


def create_scorer(name: str, **options) -> Scorer:
    """Build (not load) the scorer `name`; a missing optional package or unknown option is a CaiError."""
    cls = scorer_class(name)
    cls.check_requirements()
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [p for p in params if p != "self" and params[p].kind is not params[p].VAR_KEYWORD]
    unknown = sorted(set(options) - set(known))
    if unknown and not accepts_any:
        allowed = ", ".join(known) or "none"
        raise CaiError(f"scorer {name} has no option {unknown[0]!r}; its options: {allowed}")
    return cls(**options)
