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
    # x is shown first as (A), then second as (B)
    return [{"label": (x_first + x_second) / 2, "position_gap": abs(x_first - x_second)}
            for x_first, x_second in _both_orders(engine, chats)]


def _both_orders(engine, chats: list) -> list[tuple[float, float]]:
    """For chats that ask each question twice, in one order and then the other: (P(A) of the first asking,
    P(B) of the second), which both measure the same option; their mean cancels a bias toward a letter."""
    logprobs = engine.label_logprobs(chats, list(LABELS)) if chats else []
    return [(_softmax_first(*logprobs[i]), 1.0 - _softmax_first(*logprobs[i + 1])) for i in range(0, len(chats), 2)]


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
    return _first_option_probabilities(engine, [
        lambda labels, p=prompt, r=response: templates.render("judge", prompt=p, response=r, labels=labels)
        for prompt, response in items])


def principle_probabilities(engine, templates: Templates, items: list[tuple[str, str, object]]) -> list[float]:
    """P(the response follows the principle) for (prompt, response, principle) triples, both label orders averaged.

    The judge of online RL (`cai train grpo|rloo`, reward `judge`): one response, one principle at a time.
    """
    return _first_option_probabilities(engine, [
        lambda labels, p=prompt, r=response, c=principle: templates.render("principle", prompt=p, response=r,
                                                                           principle=c, labels=labels)
        for prompt, response, principle in items])


def _first_option_probabilities(engine, questions: list) -> list[float]:
    """P(the first option) of two-option questions, each rendered (`question(labels)`) with the labels in both
    orders: the first option is labelled A, then B, which cancels the model's bias toward a letter."""
    chats = []
    for question in questions:
        for labels in (LABELS, LABELS[::-1]):
            chats.append([{"role": "user", "content": question(list(labels))}])
    return [(first_as_a + first_as_b) / 2 for first_as_a, first_as_b in _both_orders(engine, chats)]
