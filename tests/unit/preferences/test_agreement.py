"""Agreement statistics on inputs whose answers are known and worked out by hand below."""

from __future__ import annotations

import math

import pytest

from cai.preferences.agreement import cohens_kappa, krippendorff_alpha, pairwise_agreement

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C (also the
# Wikipedia article's example): 4 observers, 12 units, values 1..5, None = not coded.
N = None
OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],  # A
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],  # B
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],  # C
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],  # D
]
UNITS = [list(unit) for unit in zip(*OBSERVERS)]

# Hand computation of the coincidence matrix o[c][k] (each ordered pair of values in a
# unit with m values weighs 1/(m-1); unit 12 has one value and drops out):
#   u1 {1,1,1}: o11 += 6/2 = 3          u2 {2,2,3,2}: o22 += 6/3 = 2, o23 = o32 += 3/3 = 1
#   u3, u4 {3,3,3,3}: o33 += 4 each     u5, u9 {2,2,2,2}: o22 += 4 each   u7: o44 += 4
#   u6 {1,2,3,4}: every off-diagonal pair among 1..4 += 1/3
#   u8 {1,1,2,1}: o11 += 2, o12 = o21 += 1     u10 {5,5,5}: o55 += 3    u11 {1,1}: o11 += 2
# so o11 = 7, o22 = 10, o33 = 8, o44 = 4, o55 = 3, o12 = o23 = 4/3, o13 = o14 = o24 = o34 = 1/3
# and the value totals are n1..n5 = 9, 13, 10, 5, 3; n = 40 pairable values.
#
# nominal:  off-diagonal sum = 40 - (7+10+8+4+3) = 8;  sum n_c^2 = 81+169+100+25+9 = 384
#           alpha = 1 - (n-1) * 8 / (n^2 - 384) = 1 - 39*8/1216 = 1 - 312/1216 = 0.743421
# interval: sum o_ck (c-k)^2 = 8/3*1 + 2/3*4 + 2/3*9 + 8/3*1 + 2/3*4 + 2/3*1 = 52/3
#           sum n_c n_k (c-k)^2 = 2*(117+360+405+432+130+260+351+50+120+15) = 4480
#           alpha = 1 - 39*(52/3)/4480 = 1 - 676/4480 = 0.849107
# ordinal:  delta(c,k) = (n_c + ... + n_k - (n_c+n_k)/2)^2, e.g. delta(1,2) = (22-11)^2 = 121,
#           delta(1,3) = 22.5^2, (1,4) 30^2, (1,5) 34^2, (2,3) 11.5^2, (2,4) 19^2, (2,5) 23^2,
#           (3,4) 7.5^2, (3,5) 11.5^2, (4,5) 4^2
#           sum o_ck delta = (8*121 + 2*506.25 + 2*900 + 8*132.25 + 2*361 + 2*56.25)/3 = 1891
#           sum n_c n_k delta = 2 * 199740 = 399480
#           alpha = 1 - 39*1891/399480 = 1 - 73749/399480 = 0.815388
# These match the published 0.743, 0.849 and 0.815.


@pytest.mark.parametrize("level, expected", [
    ("nominal", 1 - 312 / 1216),
    ("interval", 1 - 676 / 4480),
    ("ordinal", 1 - 73749 / 399480),
])
def test_krippendorff_reliability_example(level, expected):
    alpha = krippendorff_alpha(UNITS, level)
    assert alpha == pytest.approx(expected, abs=1e-12)
    assert round(alpha, 3) == {"nominal": 0.743, "interval": 0.849, "ordinal": 0.815}[level]


def test_pairwise_agreement_on_the_reliability_example():
    # Pairs per unit (agreeing/all): u1 3/3, u2 3/6, u3 6/6, u4 6/6, u5 6/6, u6 0/6,
    # u7 6/6, u8 3/6, u9 6/6, u10 3/3, u11 1/1, u12 none  ->  43/55.
    assert pairwise_agreement(UNITS) == pytest.approx(43 / 55)


# Cohen's kappa, the Wikipedia example: 50 proposals, both say yes 20, A yes/B no 5,
# A no/B yes 10, both no 15.  p_o = 35/50 = 0.7; A says yes 25/50, B 30/50, so
# p_e = 0.5*0.6 + 0.5*0.4 = 0.5 and kappa = (0.7-0.5)/(1-0.5) = 0.4.
A = ["yes"] * 25 + ["no"] * 25
B = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15


def test_cohens_kappa_textbook_example():
    assert cohens_kappa(A, B) == pytest.approx(0.4)


def test_alpha_on_the_kappa_example():
    # 100 values: yes 25+30 = 55, no 45; 15 disagreeing units each add o_yn = o_ny = 1.
    # alpha = 1 - 99*30/(100^2 - 55^2 - 45^2) = 1 - 2970/4950 = 0.4
    assert krippendorff_alpha(list(zip(A, B))) == pytest.approx(0.4)


def test_cohens_kappa_can_be_negative():
    # Always opposite: p_o = 0, p_e = 0.5, kappa = -1.
    assert cohens_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("level", ["nominal", "interval", "ordinal"])
def test_perfect_agreement_is_one(level):
    units = [[1, 1, 1], [2, 2, None], [5, 5, 5], [3, 3]]
    assert krippendorff_alpha(units, level) == 1.0
    assert pairwise_agreement(units) == 1.0
    assert cohens_kappa([1, 2, 5, 3], [1, 2, 5, 3]) == 1.0


def test_one_category_everywhere_is_undefined_not_perfect():
    """Everyone always says the same thing: no evidence either way, so NaN (documented)."""
    assert math.isnan(cohens_kappa([0, 0, 0], [0, 0, 0]))
    assert math.isnan(krippendorff_alpha([[0, 0], [0, 0, 0]]))
    assert pairwise_agreement([[0, 0], [0, 0, 0]]) == 1.0  # raw agreement has no chance term


def test_nothing_pairable_is_undefined():
    units = [[1, None, None], [None, 2], []]
    assert math.isnan(krippendorff_alpha(units))
    assert math.isnan(pairwise_agreement(units))
    assert math.isnan(cohens_kappa([], []))


def test_single_value_units_do_not_count():
    with_singles = UNITS + [[4], [None, 5, None]]
    assert krippendorff_alpha(with_singles) == krippendorff_alpha(UNITS)


def test_interval_weights_disagreement_by_distance():
    # Off by one on a 1..5 scale is closer agreement than off by four.
    near, far = [[4, 5], [5, 5], [1, 1]], [[1, 5], [5, 5], [1, 1]]
    assert krippendorff_alpha(near, "interval") > krippendorff_alpha(far, "interval")


def test_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(UNITS, "ratio")
    with pytest.raises(ValueError, match="3 and 2"):
        cohens_kappa([1, 2, 3], [1, 2])
