"""AI feedback: the model itself judges responses, read from option-label log-probabilities.

As in the Constitutional AI paper's RL stage, the feedback model sees a
principle and two responses as options (A) and (B); the probability it puts
on each label is a soft preference. Showing the options in both orders and
averaging cancels the model's bias toward a position.
"""

from __future__ import annotations

import math

from cai.generation.principles import sample_principles
from cai.generation.templates import Templates

LABELS = ("A", "B")


def _softmax_first(a: float, b: float) -> float:
    """P(first) from two log-probabilities."""
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)


def compare(engine, templates: Templates, items: list[tuple[str, str, str, object]]) -> list[dict]:
    """For (prompt, x, y, principle) items, P(x better than y) under the principle, debiased by order."""
    chats = []
    for prompt, x, y, principle in items:
        for a, b in ((x, y), (y, x)):
            text = templates.render("feedback", prompt=prompt, principle=principle,
                                    response_a=a, response_b=b, labels=list(LABELS))
            chats.append([{"role": "user", "content": text}])
    logprobs = engine.label_logprobs(chats, list(LABELS)) if chats else []
    out = []
    for i in range(len(items)):
        x_first = _softmax_first(*logprobs[2 * i])          # x shown as (A)
        x_second = 1.0 - _softmax_first(*logprobs[2 * i + 1])   # x shown as (B)
        out.append({"label": (x_first + x_second) / 2, "position_gap": abs(x_first - x_second)})
    return out


def preference_labels(engine, templates: Templates, constitution, items: list[tuple[str, str, str]],
                      *, seed: int = 0, keys: list[str] | None = None) -> list[dict]:
    """For (prompt, x, y) triples, P(x better than y) under a sampled principle, debiased by order."""
    enabled = [p for p in constitution.principles if p.enabled]
    by_id = {p.id: p for p in enabled}
    keys = keys or [str(i) for i in range(len(items))]
    principles = [by_id[sample_principles(enabled, 1, seed=seed, strategy=constitution.sampling.strategy,
                                          key=f"feedback:{k}")[0]] for k in keys]
    labels = compare(engine, templates, [(*item, p) for item, p in zip(items, principles)])
    return [{**label, "principle_id": p.id} for label, p in zip(labels, principles)]


def pair_preferences(engine, templates: Templates, constitution, rows: list[dict]) -> list[float | None]:
    """P(chosen better than rejected) of each pair row under its own principles (mean over them).

    None for a row none of whose principles is in the constitution.
    """
    by_id = {p.id: p for p in constitution.principles}
    items, owner = [], []
    for i, row in enumerate(rows):
        for pid in row.get("principle_ids") or []:
            if pid in by_id:
                items.append((row["prompt"][-1]["content"], row["chosen"][-1]["content"],
                              row["rejected"][-1]["content"], by_id[pid]))
                owner.append(i)
    sums: dict[int, list[float]] = {}
    for i, label in zip(owner, compare(engine, templates, items)):
        sums.setdefault(i, []).append(label["label"])
    return [sum(sums[i]) / len(sums[i]) if i in sums else None for i in range(len(rows))]


def harmless_probabilities(engine, templates: Templates, items: list[tuple[str, str]]) -> list[float]:
    """P(harmless) for (prompt, response) pairs, averaged over both label orders."""
    chats = []
    for prompt, response in items:
        for labels in (LABELS, LABELS[::-1]):
            text = templates.render("judge", prompt=prompt, response=response, labels=list(labels))
            chats.append([{"role": "user", "content": text}])
    logprobs = engine.label_logprobs(chats, list(LABELS))
    out = []
    for i in range(len(items)):
        harmless_as_a = _softmax_first(*logprobs[2 * i])        # labels A=harmless
        harmless_as_b = 1.0 - _softmax_first(*logprobs[2 * i + 1])   # labels swapped: B=harmless
        out.append((harmless_as_a + harmless_as_b) / 2)
    return out
