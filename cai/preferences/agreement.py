"""Inter-annotator agreement: raw pairwise agreement, Cohen's kappa, Krippendorff's alpha.

Raw agreement is what the alignment guide's `compute_agreement` measures, but it
rewards annotators who all pick the common answer; kappa and alpha subtract the
agreement expected by chance, so they are the numbers to gate data on.

When the data cannot separate agreement from chance (every value the same
category, or nothing to compare) kappa and alpha are NaN, not 1.0: a set where
everyone always says "A" shows no evidence of reliability, and the
Krippendorff's alpha literature calls alpha undefined there. Callers print it
as "n/a".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from itertools import accumulate, combinations

LEVELS = ("nominal", "interval", "ordinal")


def pairwise_agreement(labels_per_item: Sequence[Sequence[Hashable | None]]) -> float:
    """Share of agreeing annotator pairs, pooled over all items (None = missing).

    Pooling pairs (not averaging per-item shares) is the guide's formula run
    over the whole set, so an item with four annotators weighs more than one
    with two. NaN when no item has two labels.
    """
    agree = total = 0
    for labels in labels_per_item:
        present = [x for x in labels if x is not None]
        for x, y in combinations(present, 2):
            agree += x == y
            total += 1
    return agree / total if total else math.nan


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two annotators who labelled the same items (nominal).

    Chance agreement uses each annotator's own label shares. NaN when both
    used one and the same label throughout (chance agreement is then 1).
    """
    if len(a) != len(b):
        raise ValueError(f"cohens_kappa: the two annotators labelled {len(a)} and {len(b)} items")
    if not a:
        return math.nan
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    shares_a, shares_b = Counter(a), Counter(b)
    expected = sum(shares_a[c] * shares_b[c] for c in shares_a) / (n * n)
    if expected == 1:
        return math.nan
    return (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Sequence[Sequence[float | Hashable | None]], level: str = "nominal") -> float:
    """Krippendorff's alpha for any number of annotators, with missing values.

    `units` holds one list per item, the values its annotators gave (None =
    not annotated). Items with fewer than two values cannot show agreement or
    disagreement and are left out, as Krippendorff prescribes. `level` picks
    the distance between values: nominal (same or not), interval (squared
    difference) or ordinal (rank distance weighted by how often values occur).
    NaN when the pairable values show no variation at all.
    """
    if level not in LEVELS:
        raise ValueError(f"krippendorff_alpha: level must be one of {', '.join(LEVELS)}, got {level!r}")
    # Coincidence matrix: each ordered pair of values inside a unit, weighted 1/(m-1).
    coincidences: Counter = Counter()
    for unit in units:
        counts = Counter(v for v in unit if v is not None)
        m = sum(counts.values())
        if m < 2:
            continue
        for c in counts:
            for k in counts:
                pairs = counts[c] * (counts[k] - (c == k))
                if pairs:
                    coincidences[c, k] += pairs / (m - 1)
    totals: Counter = Counter()
    for (c, _), weight in coincidences.items():
        totals[c] += weight
    n = sum(totals.values())
    delta = _distance(level, totals)
    observed = sum(weight * delta(c, k) for (c, k), weight in coincidences.items())
    expected = sum(totals[c] * totals[k] * delta(c, k) for c in totals for k in totals)
    if expected == 0:
        return math.nan
    return 1 - (n - 1) * observed / expected


def _distance(level: str, totals: Counter) -> Callable:
    """The squared distance delta²(c, k) of Krippendorff's metric for `level`."""
    if level == "nominal":
        return lambda c, k: float(c != k)
    if level == "interval":
        return lambda c, k: float(c - k) ** 2
    ordered = sorted(totals)
    rank = {v: i for i, v in enumerate(ordered)}
    running = list(accumulate(totals[v] for v in ordered))

    def ordinal(c, k):
        lo, hi = sorted((rank[c], rank[k]))
        between = running[hi] - (running[lo - 1] if lo else 0)  # n_g summed over g from c to k
        return (between - (totals[c] + totals[k]) / 2) ** 2

    return ordinal
