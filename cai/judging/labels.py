"""AI feedback: a chat model judges responses, read from the log-probabilities of option labels.

As in the Constitutional AI paper's RL stage, the judge sees a question with
two options labelled (A) and (B); the probability it puts on each label is a
soft answer. Every question is asked twice, the options in one order and then
the other, and the two answers averaged: that cancels the model's bias toward a
position or a letter.

The judge is any engine that reads label log-probabilities (transformers, vLLM,
an OpenAI-compatible server), or a `cai.judging.judge.Judge` around one. A
conversation the judge could not answer (a server that failed on it) fails that
item alone: `compare` gives its reason under `error`.
"""

from __future__ import annotations

import math

from cai.errors import CaiError
from cai.judging.judge import engine_label_reads

LABELS = ("A", "B")


def _softmax_first(a: float, b: float) -> float:
    """P(first) from two log-probabilities."""
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)


def compare(engine, templates, items: list[tuple[str, str, str, object]]) -> list[dict]:
    """For (prompt, x, y, principle) items, P(x better than y) under the principle, debiased by order.

    Each result: `label` (None when the judge failed), `position_gap`, `floored` and `error`.
    """
    chats = []
    for prompt, x, y, principle in items:
        for a, b in ((x, y), (y, x)):
            text = templates.render("feedback", prompt=prompt, principle=principle,
                                    response_a=a, response_b=b, labels=list(LABELS))
            chats.append([{"role": "user", "content": text}])
    # x is shown first as (A), then second as (B)
    out = []
    for x_first, x_second, floored, error in _both_orders(engine, chats):
        if error is not None:
            out.append({"label": None, "position_gap": None, "floored": floored, "error": error})
        else:
            out.append({"label": (x_first + x_second) / 2, "position_gap": abs(x_first - x_second),
                        "floored": floored, "error": None})
    return out


def _both_orders(engine, chats: list) -> list[tuple[float | None, float | None, bool, str | None]]:
    """For chats that ask each question twice, in one order and then the other: (P(A) of the first asking,
    P(B) of the second), which both measure the same option; their mean cancels a bias toward a letter.
    Also whether a label was floored, and why the judge failed (None when it did not)."""
    reads = engine_label_reads(engine, chats, list(LABELS)) if chats else []
    out = []
    for first, second in zip(reads[::2], reads[1::2]):
        error = first.error or second.error
        floored = bool(first.floored or second.floored)
        if error is not None:
            out.append((None, None, floored, error))
        else:
            out.append((_softmax_first(*first.logprobs), 1.0 - _softmax_first(*second.logprobs), floored, None))
    return out


def preference_labels(engine, templates, constitution, items: list[tuple[str, str, str]],
                      *, seed: int = 0, keys: list[str] | None = None) -> list[dict]:
    """For (prompt, x, y) triples, P(x better than y) under a sampled principle, debiased by order."""
    from cai.generation.principles import sample_principles

    enabled = [p for p in constitution.principles if p.enabled]
    by_id = {p.id: p for p in enabled}
    keys = keys or [str(i) for i in range(len(items))]
    principles = [by_id[sample_principles(enabled, 1, seed=seed, strategy=constitution.sampling.strategy,
                                          key=f"feedback:{k}")[0]] for k in keys]
    labels = compare(engine, templates, [(*item, p) for item, p in zip(items, principles)])
    return [{**label, "principle_id": p.id} for label, p in zip(labels, principles)]


def harmless_probabilities(engine, templates, items: list[tuple[str, str]], *, strict: bool = True) -> list:
    """P(harmless) for (prompt, response) pairs, averaged over both label orders."""
    return _first_option_probabilities(engine, [
        lambda labels, p=prompt, r=response: templates.render("judge", prompt=p, response=r, labels=labels)
        for prompt, response in items], strict)


def principle_probabilities(engine, templates, items: list[tuple[str, str, object]], *, strict: bool = True) -> list:
    """P(the response follows the principle) for (prompt, response, principle) triples, both label orders
    averaged.

    The judge of online RL (`cai train grpo|rloo`, reward `judge`): one response, one principle at a time.
    """
    return _first_option_probabilities(engine, [
        lambda labels, p=prompt, r=response, c=principle: templates.render("principle", prompt=p, response=r,
                                                                           principle=c, labels=labels)
        for prompt, response, principle in items], strict)


def _first_option_probabilities(engine, questions: list, strict: bool) -> list[float | None]:
    """P(the first option) of two-option questions, each rendered (`question(labels)`) with the labels in both
    orders: the first option is labelled A, then B, which cancels the model's bias toward a letter.

    A question the judge failed on is None, or with `strict` a CaiError naming how many failed and why
    (raised after the others were answered, so a cached judge keeps their answers)."""
    chats = []
    for question in questions:
        for labels in (LABELS, LABELS[::-1]):
            chats.append([{"role": "user", "content": question(list(labels))}])
    answers = _both_orders(engine, chats)
    errors = [error for *_, error in answers if error is not None]
    if errors and strict:
        raise CaiError(f"the judge failed on {len(errors)} of {len(answers)} questions: {errors[0]}")
    return [None if error is not None else (first_as_a + first_as_b) / 2
            for first_as_a, first_as_b, _, error in answers]
