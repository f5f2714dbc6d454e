"""Seeded percentile bootstrap confidence intervals, and the win-rate arithmetic.

Every rate `cai eval` reports comes with a 95% interval from resampling the
prompts with replacement: draw `n_resamples` samples of the per-prompt values
(same size as the data), take the statistic of each, and read the
`(1 - level) / 2` and `1 - (1 - level) / 2` quantiles. With a fixed seed the
interval is reproducible run to run. For 24 prompts the interval is wide on
purpose: it says how little 24 prompts can tell.

A difference between two models on the same prompts is bootstrapped on the
per-prompt differences (a paired bootstrap), which is tighter than comparing
two separate intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval; `value`, `lo`, `hi` are None when there is no data."""

    value: float | None
    lo: float | None
    hi: float | None
    n: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci"] = [out.pop("lo"), out.pop("hi")]
        return out


def _array(values: Sequence[float]):
    import numpy as np

    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size and not np.all(np.isfinite(data)):
        from cai.errors import CaiError

        raise CaiError("bootstrap: values must be finite numbers")
    return data


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = DEFAULT_SEED) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean of `values`; (None, None) for no values.

    All-equal values give a zero-width interval at that value; the interval
    always lies within [min(values), max(values)].
    """
    import numpy as np

    from cai.errors import CaiError

    if not 0 < level < 1:
        raise CaiError(f"bootstrap: level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise CaiError(f"bootstrap: n_resamples must be at least 1, got {n_resamples}")
    data = _array(values)
    if data.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=float)
    # Chunks bound the memory of the (resamples x n) index matrix for large eval sets.
    chunk = max(1, 2_000_000 // data.size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # Clamp float noise so an all-equal sample yields exactly [v, v].
    lo, hi = max(float(lo), float(data.min())), min(float(hi), float(data.max()))
    return lo, hi


def estimate(values: Sequence[float], **options) -> Estimate:
    """Mean of `values` with its bootstrap interval."""
    data = _array(values)
    if data.size == 0:
        return Estimate(None, None, None, 0)
    lo, hi = bootstrap_ci(data, **options)
    return Estimate(float(data.mean()), lo, hi, int(data.size))


def paired_difference(a: Sequence[float], b: Sequence[float], **options) -> Estimate:
    """Mean of a - b over paired observations (same prompts), with a paired bootstrap interval."""
    from cai.errors import CaiError

    if len(a) != len(b):
        raise CaiError(f"paired bootstrap: {len(a)} values against {len(b)}; the pairs must line up")
    return estimate([x - y for x, y in zip(a, b)], **options)


def win_indicators(a: Sequence[float], b: Sequence[float], *, tie_tolerance: float = 0.0) -> list[float]:
    """Per pair: 1 when a > b, 0 when a < b, 0.5 for a tie (|a - b| <= tie_tolerance)."""
    from cai.errors import CaiError

    if len(a) != len(b):
        raise CaiError(f"win rate: {len(a)} scores against {len(b)}; the pairs must line up")
    out = []
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            raise CaiError("win rate: scores must be numbers, got NaN")
        out.append(0.5 if abs(x - y) <= tie_tolerance else (1.0 if x > y else 0.0))
    return out


def win_rate(a: Sequence[float], b: Sequence[float], *, tie_tolerance: float = 0.0, **options) -> Estimate:
    """Share of pairs where a beats b (ties count half), with its bootstrap interval."""
    return estimate(win_indicators(a, b, tie_tolerance=tie_tolerance), **options)
