"""Score pairs with safety classifiers and drop the ones the rules reject.

The defaults are the alignment guide's: a chosen text with toxicity above 0.7
or flagged as biased is dropped, and so is a pair whose chosen text is more
toxic than its rejected one (it would teach the model the wrong direction).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from cai.safety.registry import DEFAULT_SCORER


class SafetyRules(BaseModel):
    """Thresholds of `cai data filter`; load from YAML with `load_rules`."""

    model_config = ConfigDict(extra="forbid")

    scorer: str = DEFAULT_SCORER
    scorer_options: dict = Field(default_factory=dict)
    toxicity_max: float = Field(0.7, ge=0, le=1)
    drop_biased: bool = True
    require_chosen_less_toxic: bool = True
    less_toxic_tolerance: float = Field(0.05, ge=0, le=1)   # score noise below this is no direction
    batch_size: int = Field(64, ge=1)


def load_rules(path: str | Path | None, **overrides) -> SafetyRules:
    """Rules from a YAML file (optional) with CLI flags on top; errors name the file and key."""
    data: dict = {}
    if path:
        from cai.io import load_mapping

        data = load_mapping(path, "filter rules file", "a mapping of rule names to values")
        data.pop("quality", None)          # the pair quality rules: cai.preferences.quality.load_quality_rules
    data.update({k: v for k, v in overrides.items() if v is not None})
    from cai.io import build

    return build(SafetyRules, data, str(path or "filter flags"))


def _text(messages: list[dict]) -> str:
    return messages[-1]["content"] if messages else ""


def score_rows(rows: list[dict], rules: SafetyRules, *, on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Add `{prompt,chosen,rejected}_{column}` score columns to every row, in batches."""
    from cai.safety.registry import create_scorer

    scorers = [create_scorer(rules.scorer, **rules.scorer_options), create_scorer("bias")]
    try:
        for scorer in scorers:
            scorer.load()
        for start in range(0, len(rows), rules.batch_size):
            batch = rows[start:start + rules.batch_size]
            for field in ("prompt", "chosen", "rejected"):
                texts = [_text(r[field]) for r in batch]
                for scorer in scorers:
                    for row, scores in zip(batch, scorer.score(texts, batch_size=rules.batch_size)):
                        for column, value in scores.items():
                            row[f"{field}_{column}"] = float(value)
            if on_batch:
                on_batch(len(batch))
    finally:
        for scorer in scorers:
            scorer.close()
    return rows


def drop_reason(row: dict, rules: SafetyRules) -> str | None:
    """The first safety rule a scored row breaks, or None."""
    if row["chosen_toxicity"] > rules.toxicity_max:
        return f"chosen toxicity > {rules.toxicity_max}"
    if rules.drop_biased and row.get("chosen_biased", 0.0) >= 1.0:
        return "chosen flagged biased"
    if (rules.require_chosen_less_toxic
            and row["chosen_toxicity"] > row["rejected_toxicity"] + rules.less_toxic_tolerance):
        return "chosen more toxic than rejected"
    return None


def apply_rules(rows: list[dict], rules: SafetyRules,
                on_drop: Callable[[dict, str], None] | None = None) -> tuple[list[dict], Counter]:
    """(kept rows, drops per reason); `on_drop(row, reason)` sees every dropped row."""
    kept, dropped = [], Counter()
    for row in rows:
        why = drop_reason(row, rules)
        if why:
            dropped[why] += 1
            if on_drop:
                on_drop(row, why)
        else:
            kept.append(row)
    return kept, dropped
