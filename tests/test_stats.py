"""The statistics behind the wall-time verdict, as properties (hypothesis) and exact values."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitcore.gate import stats

samples = st.lists(st.floats(min_value=100.0, max_value=5000.0, allow_nan=False), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(samples, st.floats(min_value=0.0, max_value=0.5))
def test_identical_samples_never_regress(xs, tol):
    assert stats.compare_samples(xs, list(xs), tol).verdict != "regressed"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=12, max_value=20), st.floats(min_value=0.12, max_value=0.5), st.integers(0, 10**6))
def test_a_shift_beyond_the_effect_size_with_enough_samples_regresses(n, shift, seed):
    r = random.Random(seed)
    base = [1000 * (1 + r.uniform(-0.02, 0.02)) for _ in range(n)]
    cur = [1000 * (1 - shift) * (1 + r.uniform(-0.02, 0.02)) for _ in range(n)]
    v = stats.compare_samples(cur, base, tol=0.05)
    assert v.verdict == "regressed" and v.high < -0.05


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e4), min_size=1, max_size=3),
       st.lists(st.floats(min_value=1.0, max_value=1e4), min_size=1, max_size=3))
def test_too_few_samples_are_inconclusive(cur, base):
    v = stats.compare_samples(cur, base, tol=0.05)
    assert v.verdict == "inconclusive" and v.low is None and "too few windows" in str(v)


def test_critical_ranks_match_the_exact_tables():
    # Mann-Whitney U two-sided at alpha 0.01 (published tables): critical U 0 for (5,5), 16 for
    # (10,10), 51 for (15,15), the largest U with P(U <= U_crit) <= 0.005; k = U_crit + 1.
    assert stats.critical_rank(5, 5) == 1
    assert stats.critical_rank(10, 10) == 17
    assert stats.critical_rank(15, 15) == 52
    assert stats.critical_rank(3, 3) is None


def test_exact_null_distribution_sums_to_all_arrangements():
    for n, m in [(1, 1), (3, 4), (6, 6)]:
        counts = stats._u_counts(n, m)
        assert sum(counts) == math.comb(n + m, n) and counts == counts[::-1]  # symmetric


def test_p_value_of_fully_separated_samples():
    # all 5 current below all 5 baseline: U = 0, P(U <= 0) = 1/252, two-sided 2/252
    assert stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert stats.mann_whitney_p([1, 2], [1, 2]) == 1.0


def test_inconclusive_says_how_many_windows_would_decide():
    r = random.Random(1)
    base = [1000 * (1 + r.gauss(0, 0.05)) for _ in range(10)]
    cur = [960 * (1 + r.gauss(0, 0.05)) for _ in range(10)]
    v = stats.compare_samples(cur, base, tol=0.05)
    assert v.verdict == "inconclusive" and v.more_windows > 10 and v.detectable > 0.02


def test_nonpositive_samples_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        stats.compare_samples([0.0, 1.0], [1.0, 1.0], 0.05)


# --- hand-computed small cases (issue 18) ------------------------------------------------------------------
def test_null_distribution_of_u_by_hand():
    # (2, 2): the 6 orderings of {a1, a2, b1, b2} give U = 0, 1, 2, 2, 3, 4
    assert stats._u_counts(2, 2) == (1, 1, 2, 1, 1)
    assert stats._u_counts(1, 1) == (1, 1)
    assert stats._u_counts(1, 3) == (1, 1, 1, 1)
    assert stats._u_counts(2, 3) == (1, 1, 2, 2, 2, 1, 1)  # C(5, 2) = 10 orderings


@pytest.mark.parametrize("a,b,p", [
    ([1, 2], [3, 4], 2 / 6),  # U = 0: P(U <= 0) = 1/6, two-sided 1/3
    ([3, 4], [1, 2], 2 / 6),  # U = 4: the mirror image
    ([1, 3], [2, 4], 4 / 6),  # U = 1: P(U <= 1) = 2/6
    ([1, 2], [2, 3], 2 / 6),  # one tie counts half: U = 0.5, floored to 0
    ([2, 2], [2, 2], 1.0),  # all tied: U = 2, the middle; 2 * 4/6 capped at 1
    ([1, 2, 3], [4, 5], 2 / 10),  # U = 0 with 10 orderings
    ([1, 4, 5], [2, 3], 2 * 4 / 10),  # U = 4 (of 6): min(4, 2) = 2, P(U <= 2) = 4/10
    ([], [1.0], 1.0),
])
def test_mann_whitney_p_by_hand(a, b, p):
    assert stats.mann_whitney_p(a, b) == pytest.approx(p, rel=1e-12)


def test_critical_rank_at_a_low_confidence_by_hand():
    # (2, 2) at 50%: alpha/2 = 0.25; P(U < 1) = 1/6 <= 0.25 < P(U < 2) = 2/6, so k = 1
    assert stats.critical_rank(2, 2, confidence=0.5) == 1
    assert stats.critical_rank(2, 2, confidence=2 / 3) == 1  # P(U < 1) = 1/6 == alpha/2: included
    assert stats.critical_rank(2, 2, confidence=0.7) is None  # 1/6 > 0.15
    assert stats.critical_rank(3, 3, confidence=0.85) == 1  # P(U < 1) = 1/20 <= 0.075 < P(U < 2) = 2/20
    assert stats.critical_rank(4, 4, confidence=0.95) == 1  # 1/70 <= 0.025 < 2/70
    assert stats.critical_rank(4, 4, confidence=0.9) == 2  # 2/70 <= 0.05 < 4/70


@pytest.mark.parametrize("cur,base,estimate", [
    ([2.0], [1.0], 1.0),
    ([1.0, 4.0], [1.0], 1.0),  # even count: the geometric mean of the two middle ratios, 2
    ([1.0, 2.0, 8.0], [1.0], 1.0),
    ([1.0, 2.0], [4.0, 8.0], -0.75),  # ratios 1/8, 1/4, 1/4, 1/2: middle two 1/4
    ([3.0, 3.0], [2.0, 2.0, 2.0], 0.5),
])
def test_hodges_lehmann_estimate_by_hand(cur, base, estimate):
    assert stats.compare_samples(cur, base, 0.05).estimate == pytest.approx(estimate, rel=1e-12)


def test_interval_of_five_against_five_is_the_extreme_ratios():
    # at 99% k = 1 for (5, 5): the interval runs from the smallest to the largest of the 25 ratios
    base = [100.0, 100.0, 100.0, 100.0, 100.0]
    s = stats.compare_samples([90.0, 95.0, 100.0, 100.0, 120.0], base, 0.05)
    assert (s.low, s.high) == (pytest.approx(-0.1), pytest.approx(0.2))
    assert s.detectable == pytest.approx(0.15) and (s.n, s.m) == (5, 5)
    assert s.verdict == "inconclusive" and s.estimate == pytest.approx(0.0)
    # gap: |log(1 + 0) - log(1 - 0.05)|; windows: 5 * (0.15 / gap)^2 = 42.76 -> 43
    assert s.more_windows == math.ceil(5 * (0.15 / -math.log(0.95)) ** 2) == 43


@pytest.mark.parametrize("current,verdict", [(94.9, "regressed"), (95.1, "pass"), (104.9, "pass"),
                                             (105.1, "improved")])
def test_verdict_just_inside_and_outside_the_minimum_effect(current, verdict):
    s = stats.compare_samples([current] * 5, [100.0] * 5, 0.05)
    assert s.verdict == verdict and s.low == s.high == pytest.approx(current / 100 - 1)
    assert s.more_windows is None and s.detectable == 0.0


def test_verdict_at_the_interval_edges():
    base = [100.0] * 5
    # within 1e-6 of -tol and +tol (exactly at it, log/exp rounding decides)
    assert stats.compare_samples([50.0001] * 5, base, 0.5).verdict == "pass"
    assert stats.compare_samples([49.9999] * 5, base, 0.5).verdict == "regressed"
    assert stats.compare_samples([199.9999] * 5, base, 1.0).verdict == "pass"
    assert stats.compare_samples([200.0001] * 5, base, 1.0).verdict == "improved"
    straddle = stats.compare_samples([49.0, 100.0, 100.0, 100.0, 100.0], base, 0.5)
    assert straddle.verdict == "inconclusive" and straddle.high == 0.0


def test_more_windows_is_none_where_the_estimate_sits_on_the_boundary():
    s = stats.compare_samples([80.0, 95.0, 95.0, 95.0, 110.0], [100.0] * 5, 0.05)
    assert s.verdict == "inconclusive" and s.estimate == pytest.approx(-0.05)
    assert s.more_windows is None
    assert str(s).endswith(f": detects {s.detectable:.1%} or more")


def test_shift_text_is_exact():
    s = stats.compare_samples([90.0] * 5, [100.0] * 5, 0.05)
    assert str(s) == "regressed (-10.0%, 99% interval -10.0%..-10.0%, p=0.0079, windows 5 vs 5)"
    s = stats.compare_samples([90.0, 95.0, 100.0, 100.0, 120.0], [100.0] * 5, 0.05)
    assert str(s) == ("inconclusive (+0.0%, 99% interval -10.0%..+20.0%, p=0.69, windows 5 vs 5): detects 15.0% or "
                      "more; about 43 windows per side would decide")
    few = stats.compare_samples([90.0], [100.0], 0.05)
    assert str(few) == ("inconclusive (-10.0%, no interval: too few windows, p=1, windows 1 vs 1): detects "
                        "nothing")


def test_empty_side_is_inconclusive():
    s = stats.compare_samples([], [100.0], 0.05)
    assert (s.verdict, s.estimate, s.low, s.p_value, s.n, s.m) == ("inconclusive", 0.0, None, 1.0, 0, 1)


def test_mutation_survivors_of_the_interval():  # docs/mutation.md
    # (1, 1) at confidence 0: alpha/2 = 0.5 = P(U < 1) exactly: included
    assert stats.critical_rank(1, 1, confidence=0.0) == 1
    # (2, 2) at 50%: k = 1, the interval runs from the smallest to the largest of 1/3, 1/5, 2/3, 2/5
    s = stats.compare_samples([1.0, 2.0], [3.0, 5.0], 0.05, confidence=0.5)
    assert (s.low, s.high) == (pytest.approx(1 / 5 - 1), pytest.approx(2 / 3 - 1)) and s.verdict == "regressed"
    # no change against a zero tolerance: the interval 0..0 is a pass (not improved, not inconclusive)
    assert stats.compare_samples([100.0] * 5, [100.0] * 5, 0.0).verdict == "pass"
    with pytest.raises(ValueError, match="^window samples must be positive numbers$"):
        stats.compare_samples([1.0], [-1.0], 0.05)
