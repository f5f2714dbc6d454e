"""Bootstrap confidence intervals and win rates on inputs whose answers are known."""

from __future__ import annotations

import math

import pytest

from cai.errors import CaiError
from cai.evaluation.bootstrap import Estimate, bootstrap_ci, estimate, paired_difference, win_indicators, win_rate


@pytest.mark.parametrize("value", [0.0, 1.0, 0.25])
def test_constant_values_give_a_zero_width_interval_at_the_value(value):
    assert bootstrap_ci([value] * 17) == (value, value)
    assert estimate([value] * 17) == Estimate(value, value, value, 17)


def test_no_values_give_no_interval():
    assert bootstrap_ci([]) == (None, None)
    assert estimate([]).to_dict() == {"value": None, "n": 0, "ci": [None, None]}


def test_a_known_proportion_lies_inside_and_the_width_matches_the_normal_approximation():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values, n_resamples=4000)
    assert lo < 0.3 < hi
    # Wald interval: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.210, 0.390]
    half = 1.96 * math.sqrt(0.3 * 0.7 / 100)
    assert lo == pytest.approx(0.3 - half, abs=0.02)
    assert hi == pytest.approx(0.3 + half, abs=0.02)


def test_agrees_with_scipy_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    values = [0.1, 0.4, 0.35, 0.8, 0.05, 0.9, 0.6, 0.2, 0.75, 0.3, 0.5, 0.45]
    ref = stats.bootstrap((np.array(values),), np.mean, n_resamples=20000, method="percentile",
                          confidence_level=0.95, random_state=1).confidence_interval
    lo, hi = bootstrap_ci(values, n_resamples=20000)
    assert lo == pytest.approx(ref.low, abs=0.015)
    assert hi == pytest.approx(ref.high, abs=0.015)


def test_deterministic_for_a_seed_and_different_across_seeds():
    values = [0.12, 0.91, 0.55, 0.07, 0.68, 0.33, 0.29, 0.84, 0.71, 0.46, 0.03, 0.97]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_interval_stays_within_the_data_and_narrows_with_level_and_size():
    values = [0.2, 0.9, 0.4, 0.4, 0.7, 0.1]
    lo, hi = bootstrap_ci(values)
    assert min(values) <= lo <= sum(values) / len(values) <= hi <= max(values)
    lo50, hi50 = bootstrap_ci(values, level=0.5)
    assert lo <= lo50 and hi50 <= hi
    small = bootstrap_ci([1.0] * 3 + [0.0] * 7)
    large = bootstrap_ci([1.0] * 300 + [0.0] * 700)
    assert (large[1] - large[0]) < (small[1] - small[0])


def test_paired_difference_bootstraps_the_per_prompt_differences():
    a = [0.9, 0.8, 0.85, 0.95, 0.7, 0.9]
    b = [x - 0.1 for x in a]
    d = paired_difference(a, b)
    assert d.value == pytest.approx(0.1)
    # every difference is 0.1, so the paired interval has no width (two separate intervals would overlap)
    assert d.lo == pytest.approx(0.1) and d.hi == pytest.approx(0.1)
    with pytest.raises(CaiError, match="line up"):
        paired_difference([1, 2], [1])


def test_win_rate_counts_ties_half():
    assert win_indicators([2, 1, 3, 5], [1, 1, 4, 5]) == [1.0, 0.5, 0.0, 0.5]
    r = win_rate([2, 1, 3, 5], [1, 1, 4, 5])
    assert r.value == pytest.approx(0.5) and r.n == 4
    assert win_indicators([1.0], [1.04], tie_tolerance=0.05) == [0.5]
    assert win_rate([3, 3, 3], [1, 1, 1]).to_dict() == {"value": 1.0, "n": 3, "ci": [1.0, 1.0]}


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(CaiError, match="finite"):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(CaiError, match="level"):
        bootstrap_ci([0.1], level=1.5)
    with pytest.raises(CaiError, match="NaN"):
        win_indicators([float("nan")], [0.0])
