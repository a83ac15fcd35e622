"""The merge gate: compare measured points with a baseline and fail on regressions.

`--fail-on throughput:5%,memory:2%`: a point fails when its images/s fell more than 5% or its peak
memory (allocated or reserved; the steady-state peak where both runs measured it, see
budgets.memory_metrics) grew more than 2% against the baseline point with the same key.
Improvements are listed, never failed; points missing on either side are listed.
"""

from __future__ import annotations

import re

from vitcore import ConfigError, budgets
from vitcore.results import point_key

METRICS = ("throughput", "memory")


def parse_fail_on(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\w+):(\d+(?:\.\d+)?)%", part)
        if not m or m.group(1) not in METRICS:
            raise ConfigError(f"bad --fail-on item {part!r}; expected METRIC:N% with METRIC one of "
                              f"{', '.join(METRICS)} (e.g. throughput:5%,memory:2%)")
        out[m.group(1)] = float(m.group(2)) / 100
    if not out:
        raise ConfigError(f"--fail-on {text!r} names no threshold")
    return out


def compare(points, baseline, thresholds: dict[str, float]):
    """Returns (regressions, improvements, missing, verdicts by point key)."""
    base = {point_key(p): p for p in baseline if p.get("status") == "ok"}
    regressions, improvements, missing, verdicts = [], [], [], {}
    for p in points:
        k = point_key(p)
        ref = base.get(k)
        if ref is None:
            missing.append(f"{' '.join(map(str, k))}: not in the baseline")
            continue
        if p.get("status") != "ok":
            regressions.append(f"{' '.join(map(str, k))}: status {p.get('status')} (baseline ok)")
            verdicts[k] = f"FAIL: {p.get('status')}"
            continue
        v = budgets.compare(p, ref, throughput_tol=thresholds.get("throughput", float("inf")),
                            memory_tol=thresholds.get("memory", float("inf")))
        delta = p["images_per_s"] / ref["images_per_s"] - 1
        if v:
            regressions += map(str, v)
            verdicts[k] = "FAIL " + "; ".join(f"{x.metric} {x.delta:+.1%}" for x in v)
        else:
            verdicts[k] = f"ok (images/s {delta:+.1%})"
            if delta > 0:
                improvements.append(f"{' '.join(map(str, k))}: images/s {delta:+.1%}")
    return regressions, improvements, missing, verdicts
