"""The statistics behind the wall-time verdict, as properties (hypothesis) and exact values."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitcore import stats

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
