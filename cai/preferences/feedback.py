"""AI feedback on preference pairs: the judge's P(chosen better than rejected) under the pair's own principles.

The questions and their reading (both option orders, label log-probabilities)
are `cai.judging.labels`; this module knows the pair rows.
"""

from __future__ import annotations

from cai.judging.labels import compare


def pair_preferences(engine, templates, constitution, rows: list[dict]) -> list[tuple[float | None, str | None]]:
    """(P(chosen better than rejected), why the judge failed) of each pair row, the mean over its own principles.

    (None, None) for a row none of whose principles is in the constitution; (None, reason) where the judge
    failed on one of its questions.
    """
    by_id = {p.id: p for p in constitution.principles}
    items, owner = [], []
    for i, row in enumerate(rows):
        for pid in row.get("principle_ids") or []:
            if pid in by_id:
                items.append((row["prompt"][-1]["content"], row["chosen"][-1]["content"],
                              row["rejected"][-1]["content"], by_id[pid]))
                owner.append(i)
    labels: dict[int, list[float]] = {}
    errors: dict[int, str] = {}
    for i, judged in zip(owner, compare(engine, templates, items)):
        if judged["error"] is not None:
            errors.setdefault(i, judged["error"])
        else:
            labels.setdefault(i, []).append(judged["label"])
    return [(None, errors[i]) if i in errors else
            (sum(labels[i]) / len(labels[i]), None) if i in labels else (None, None) for i in range(len(rows))]
