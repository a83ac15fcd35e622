"""Is a run slower than its baseline? A distribution-free answer from window samples.

Wall-clock throughput on a shared GPU host moves 10-50% between windows and processes (measured on
the lent H100, docs/gate.md), so a fixed threshold on one median either false-alarms or must be so
loose it catches nothing. Instead, as asv and Chromium's Pinpoint do, compare the two sets of window
samples with the Mann-Whitney U statistic, and estimate the relative shift with the Hodges-Lehmann
estimator and its exact confidence interval (the pairwise log-ratios between the order statistics
that U's null distribution picks). The verdict against a minimum effect `tol`:

- regressed:     the whole interval lies below -tol (slower by more than tol, with confidence);
- pass:          the whole interval lies above -tol (not slower by more than tol);
- improved:      the whole interval lies above +tol (faster: update the baseline);
- inconclusive:  the interval straddles -tol; the samples cannot tell. `detectable` is the smallest
                 change these samples resolve (the interval's half-width) and `more_windows` how many
                 windows per side would shrink it to the distance that decides.

Both sides' spread counts: a noisy baseline widens the interval just as a noisy run does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

CONFIDENCE = 0.99  # two-sided; a false "regressed" on unchanged code is what a merge gate must not do


@lru_cache(maxsize=256)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many arrangements of n + m distinct values give each U = 0..n*m (exact null distribution)."""
    # f[i][j][u]: arrangements of i values of one sample and j of the other with statistic u
    prev = [[1] + [0] * (n * m) for _ in range(m + 1)]  # i = 0: U is 0
    for _ in range(n):
        cur = [[0] * (n * m + 1) for _ in range(m + 1)]
        cur[0][0] = 1
        for j in range(1, m + 1):
            a, b = prev[j], cur[j - 1]  # the largest value is from sample 1 (adds j to U) or from sample 2
            row = cur[j]
            for u in range(n * m + 1):
                row[u] = (a[u - j] if u >= j else 0) + b[u]
        prev = cur
    return tuple(prev[m])


def critical_rank(n: int, m: int, confidence: float = CONFIDENCE) -> int | None:
    """The largest k with P(U < k) <= (1 - confidence) / 2 under the null, or None when even the most
    extreme U is more likely than that (too few samples to say anything at this confidence)."""
    counts = _u_counts(n, m)
    total = math.comb(n + m, n)
    alpha = (1 - confidence) / 2
    cum, k = 0, 0
    for u, c in enumerate(counts):
        if (cum + c) / total > alpha:
            break
        cum += c
        k = u + 1
    return k if k > 0 else None


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact p-value of the U test (ties counted half); 1.0 with an empty side."""
    n, m = len(a), len(b)
    if not n or not m:
        return 1.0
    u = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    counts = _u_counts(n, m)
    total = math.comb(n + m, n)
    lo = sum(counts[: math.floor(min(u, n * m - u)) + 1]) / total
    return min(1.0, 2 * lo)


@dataclass(frozen=True)
class Shift:
    verdict: str  # pass | regressed | improved | inconclusive
    estimate: float  # Hodges-Lehmann relative change, current over baseline - 1
    low: float | None  # confidence interval of the relative change (None: too few samples)
    high: float | None
    p_value: float
    n: int
    m: int
    detectable: float | None  # the smallest change these samples resolve (the interval's half-width)
    more_windows: int | None  # for an inconclusive verdict: windows per side that would decide

    def __str__(self) -> str:
        ci = "no interval: too few windows" if self.low is None else \
            f"{CONFIDENCE:.0%} interval {self.low:+.1%}..{self.high:+.1%}"
        s = f"{self.verdict} ({self.estimate:+.1%}, {ci}, p={self.p_value:.2g}, windows {self.n} vs {self.m})"
        if self.verdict == "inconclusive":
            more = f"; about {self.more_windows} windows per side would decide" if self.more_windows else ""
            det = f"detects {self.detectable:.1%} or more" if self.detectable is not None else "detects nothing"
            s += f": {det}{more}"
        return s


def compare_samples(current: list[float], baseline: list[float], tol: float,
                    confidence: float = CONFIDENCE) -> Shift:
    """Higher is better (throughput). Samples must be positive (images/s per window)."""
    if any(not (x > 0) for x in [*current, *baseline]):
        raise ValueError("window samples must be positive numbers")
    n, m = len(current), len(baseline)
    diffs = sorted(math.log(x) - math.log(y) for x in current for y in baseline)
    mid = len(diffs) // 2
    est = math.expm1((diffs[mid] + diffs[~mid]) / 2) if diffs else 0.0
    p = mann_whitney_p(current, baseline)
    k = critical_rank(n, m, confidence) if n and m else None
    if k is None:
        return Shift("inconclusive", est, None, None, p, n, m, None, None)
    low, high = math.expm1(diffs[k - 1]), math.expm1(diffs[len(diffs) - k])
    half = (high - low) / 2
    if high < -tol:
        verdict = "regressed"
    elif low > tol:
        verdict = "improved"
    elif low >= -tol:
        verdict = "pass"
    else:
        verdict = "inconclusive"
    more = None
    if verdict == "inconclusive":
        # The interval's width falls as 1/sqrt(windows); it decides once its half-width is below the
        # distance between the estimate and -tol.
        gap = abs(math.log1p(est) - math.log1p(-tol)) if tol < 1 else 0.0
        need = max(n, m) * (half / gap) ** 2 if gap > 1e-9 else math.inf
        more = math.ceil(need) if need < 1e6 else None  # None: the estimate sits on the boundary
    return Shift(verdict, est, low, high, p, n, m, half, more)
