"""Score pairs with safety classifiers and drop the ones the rules reject.

The defaults are the alignment guide's: a chosen text with toxicity above 0.7
or flagged as biased is dropped, and so is a pair whose chosen text is more
toxic than its rejected one (it would teach the model the wrong direction).

"More toxic" means more than the classifier's noise. A revision that names a
harm in order to reject it ("hitting your partner is abuse") scores higher than
the polite compliant answer it replaced, and two harmless texts saying the same
thing in other words differ by up to 0.49 on the default classifier, nearly their
whole score below 0.5 (bench/toxicity_spread.py; README, "Safety rules"). So the
chosen counts as more toxic only when it beats by more than `less_toxic_tolerance`
(0.5) both the rejected text and the prompt: the words of the harm it names come
from the prompt, and a classifier that scores words scores the prompt's subject too.
In effect the rule is a backstop under the absolute one: below 0.7 it fires on a
chosen scoring 0.5-0.7 over texts scoring 0.5 less ("I can't help with that, you
<slur>" after a polite answer); milder rudeness passes, as the README says.
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
    # The largest toxicity gap between two harmless texts meaning the same (toxic-bilstm, bench/toxicity_spread.py),
    # rounded up: a smaller gap is the classifier's noise, not a direction.
    less_toxic_tolerance: float = Field(0.5, ge=0, le=1)
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
            and row["chosen_toxicity"] > less_toxic_baseline(row) + rules.less_toxic_tolerance):
        return "chosen more toxic than rejected"
    return None


def less_toxic_baseline(row: dict) -> float:
    """What the chosen's toxicity is compared with: the rejected's, or the prompt's when that is higher."""
    return max(row["rejected_toxicity"], row.get("prompt_toxicity", 0.0))


def evidence(row: dict) -> str:
    """The scores behind a safety drop, for dropped.jsonl."""
    found = f"chosen toxicity {row['chosen_toxicity']:.2f}, rejected {row['rejected_toxicity']:.2f}"
    if "prompt_toxicity" in row:
        found += f", prompt {row['prompt_toxicity']:.2f}"
    if row.get("chosen_biased", 0.0) >= 1.0:
        found += f", chosen bias {row.get('chosen_bias', 1.0):.2f}"
    return found


def apply_rules(rows: list[dict], rules: SafetyRules,
                on_drop: Callable[[dict, str, str], None] | None = None) -> tuple[list[dict], Counter]:
    """(kept rows, drops per reason); `on_drop(row, reason, evidence)` sees every dropped row."""
    kept, dropped = [], Counter()
    for row in rows:
        why = drop_reason(row, rules)
        if why:
            dropped[why] += 1
            if on_drop:
                on_drop(row, why, evidence(row))
        else:
            kept.append(row)
    return kept, dropped
