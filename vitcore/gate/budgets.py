"""THE regression rule (budget files: vitcore.gate.budget_files).

One rule serves the GPU tier's performance tests (a point against this device's budget entry) and
the merge gate (`vitcore bench --compare` / `vitcore report --baseline`: a run against a baseline
run). Which fields are gated, in which direction and with which default tolerance is declared in
the point schema (vitcore.spec.points: Field.gate); `--fail-on group:N%` overrides a group's tolerance.

A budget entry is a measured point's gated values, its per-process wall samples and provenance,
never a number typed in, and never a private copy of the tolerance: changing a default changes
every verdict. Only `--update-budgets` writes entries. docs/gate.md says how each metric is judged.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from vitcore import ConfigError, VitcoreError
from vitcore.gate import stats
from vitcore.spec import points
from vitcore.spec.points import process_medians

OUTCOMES = ("pass", "regressed", "improved", "inconclusive")
MIN_PROCESSES = next(n for n in range(1, 50) if stats.critical_rank(n, n) is not None)  # 5 at 99%


@dataclass
class Verdict:
    """One gated metric of one point against its reference (a budget entry or a baseline point).
    outcome: pass | regressed | improved (beyond the tolerance: update the baseline) | inconclusive
    (statistical metrics whose samples cannot tell; `detail` names the detectable change)."""

    plugin: str
    precision: str
    batch_size: int
    metric: str
    measured: float
    budget: float
    delta: float  # relative, signed: measured / budget - 1 (statistical: the Hodges-Lehmann shift)
    outcome: str = "regressed"
    group: str = ""
    detail: str = ""
    note: str = ""  # the report cell's words for an inconclusive verdict (what it can detect)
    two_sided: bool = False  # improved fails too (budgets.fails)

    def __str__(self):
        if self.group == "settings":
            return f"{self.plugin} {self.precision} bs={self.batch_size}: {self.detail}"
        who = f"{self.plugin} {self.precision} bs={self.batch_size}: {self.metric}"
        if math.isnan(self.measured):  # a point that did not finish, or a metric this run lacks
            s = f"{who} (not measured; budget {self.budget:.4g})"
        else:
            s = f"{who} {self.measured:.4g} vs budget {self.budget:.4g} ({self.delta:+.1%})"
        if self.outcome != "regressed":
            s += f" {self.outcome}"
        return s + (f"; {self.detail}" if self.detail else "")

    def short(self) -> str:
        """The report's cell: `device_time pass (+0.3%)`."""
        if self.group == "status":
            return self.metric
        if self.group == "settings":
            return "plugin options differ"
        if self.outcome == "inconclusive":
            return f"{self.group} inconclusive ({self.note})"
        if math.isnan(self.delta):
            return f"{self.group} {self.outcome} (not measured)"
        return f"{self.group} {self.outcome} ({self.delta:+.1%})"


Violation = Verdict  # a verdict whose outcome is "regressed"


# --- the rule -------------------------------------------------------------------------------------
def tolerances(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Each gate group's allowed relative change: the schema's default unless overridden."""
    out = {f.gate.group: f.gate.tolerance for f in points.gated()}
    return out | (overrides or {})


def fail_on_tolerances(text: str | None) -> dict[str, float]:
    """The tolerances a `--fail-on` text sets (every command parses it here); the defaults without one."""
    return tolerances(parse_fail_on(text) if text else None)


def parse_fail_on(text: str) -> dict[str, float]:
    """`throughput:5%,memory:2%` -> {"throughput": 0.05, "memory": 0.02}."""
    groups = points.gate_groups()
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\w+):(\d+(?:\.\d+)?)%", part)
        if not m or m.group(1) not in groups:
            raise ConfigError(f"bad --fail-on item {part!r}; expected METRIC:N% with METRIC one of "
                              f"{', '.join(groups)} (e.g. throughput:5%,memory:2%)")
        out[m.group(1)] = float(m.group(2)) / 100
    if not out:
        raise ConfigError(f"--fail-on {text!r} names no threshold")
    return out


def compared_field(field: points.Field, point: dict, ref: dict) -> str:
    """The field itself where both sides measured it, else its fallback (older points)."""
    if field.gate.fallback and not (point.get(field.name) and ref.get(field.name)):
        return field.gate.fallback
    return field.name


def band(name: str, ref: dict) -> tuple[float, float]:
    """The reference's recorded range of a metric: each process's value where several were recorded
    (points.observed), else its single value."""
    seen = [v for v in points.observed(ref).get(name, []) if valid_value(v)] or [ref[name]]
    return min(seen), max(seen)


def _threshold(field: points.Field, got: float, lo: float, hi: float, tol: float) -> str:
    """Outside the recorded range widened by the tolerance: regressed on the worse side, improved on
    the better side (for a two-sided gate the caller fails that too: the budget is stale)."""
    if field.gate.worse == "higher":
        worse, better = got > hi * (1 + tol), got < lo * (1 - tol)
    else:
        worse, better = got < lo * (1 - tol), got > hi * (1 + tol)
    return "regressed" if worse else "improved" if better else "pass"


def fails(v: Verdict, strict: bool = False) -> bool:
    """Whether a verdict fails the gate: regressed, or improved on a two-sided (portable) metric —
    fewer launches or less memory than recorded means the budget no longer describes the code."""
    if v.outcome == "regressed":
        return True
    return v.outcome == "improved" and (strict or v.two_sided)


def _statistical(field: points.Field, point: dict, ref: dict, tol: float) -> tuple[str, float, str, str]:
    """Per-process medians of both sides (stats.compare_samples): outcome, shift, description.

    The process is the sample, not the window: on the H100, windows of one process agree with each
    other far better than with another process of the same code (gemini_auto bs128: two baseline
    processes within 4%, a third 19% slower), so windows treated as independent samples called
    unchanged code "regressed" at p < 0.001 on 3 of 18 points. At 99% confidence the exact U test
    needs 5 processes a side to decide anything (`--processes`, `--until-decided`)."""
    cur, base = process_medians(point), process_medians(ref)
    if not cur or not base:
        side = "baseline" if cur else "current"
        return "inconclusive", 0.0, f"no samples on the {side} side", f"no {side} samples"
    shift = stats.compare_samples(cur, base, tol)
    detail = str(shift).replace("windows", "processes")
    if shift.low is None:
        return "inconclusive", shift.estimate, (f"{detail}; too few processes to decide at 99% ({MIN_PROCESSES} a "
                                                "side suffice: --processes, --until-decided)"), \
            f"{shift.n} vs {shift.m} processes: too few"
    return shift.verdict, shift.estimate, detail, f"detects {shift.detectable:.1%}"


def sm_clock(point: dict) -> float | None:
    """The SM clock a point's device time ran at: read over its profiled steps, else (points recorded
    before that field) the median of the clocks read at its timed windows' ends."""
    if point.get("device_sm_clock_mhz"):
        return point["device_sm_clock_mhz"]
    clocks = [c for c in point.get("host_sm_clock_mhz_windows") or [] if c]
    return statistics.median(clocks) if clocks else None


def _slower_clock(point: dict, ref: dict, delta: float, tol: float) -> tuple[str, str] | None:
    """(detail, note) where device time beyond the tolerance is within what a lower SM clock explains.

    Kernel time of a compute-bound step scales with 1 / clock. On the H100 one machine ran torch_ddp
    fp32 bs128 at 1950-1965 MHz against 1980 on four others and read +1.7% to +2.4% device time
    (reports/h100-gate/2026-11-25-546c4d3). Such a point is inconclusive, naming both clocks, never
    a pass: the allowance is the clock ratio, so a regression larger than it still fails."""
    cur, base = sm_clock(point), sm_clock(ref)
    if not cur or not base or cur >= base:
        return None
    allowed = base / cur - 1
    if delta > tol + allowed:
        return None
    return (f"the GPU ran at {cur:.0f} MHz against {base:.0f} in the reference, which alone slows a "
            f"compute-bound step by up to {allowed:.1%}: re-measure at full clock"), f"clock {cur:.0f} vs {base:.0f} MHz"


def valid_value(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def _measured(name: str, point: dict, ref: dict):
    """The point's value of a gated field, comparable with ref's: device time recorded before copies
    were split off (ref without copy_ms_per_step) included them, so kernels + copies face it."""
    got = point.get(name)
    if name == "device_ms_per_step" and got is not None and ref.get("copy_ms_per_step") is None:
        got += point.get("copy_ms_per_step") or 0.0
    return got


def judge(point: dict, ref: dict, *, tol: dict[str, float] | None = None, groups=None,
          revisions: bool = False) -> list[Verdict]:
    """Every gated metric of `point` against `ref` (a budget entry or a baseline point) in the gate
    `groups` (default: all), one Verdict each. A metric `ref` lacks is not judged. A point that did
    not finish ("oom", "error") is one regressed verdict of its own. revisions: `ref` is the base
    revision measured beside `point` (`vitcore ab`), not a record: the plugin options may differ (a
    changed option is the change under test) and no metric is two-sided (fewer launches or less memory
    is an improvement, not a stale budget: on the H200 a faster change failed on them)."""
    tol = tolerances(tol)
    who = (point["plugin"], point["precision"], point["batch_size"])
    if point.get("status") != "ok":
        return [Verdict(*who, f"status {point.get('status')}", float("nan"), ref.get("images_per_s") or float("nan"),
                        float("nan"), group="status")]
    if not revisions and (mismatch := options_mismatch(point, ref)) is not None:
        return [Verdict(*who, "plugin options", float("nan"), float("nan"), float("nan"), group="settings",
                        detail=mismatch)]
    out = []
    for field in points.gated():
        g = field.gate
        if groups is not None and g.group not in groups:
            continue
        two_sided = g.two_sided and not revisions
        name = compared_field(field, point, ref)
        got, want = _measured(name, point, ref), ref.get(name)
        if want is None:
            continue
        if not valid_value(want):
            raise VitcoreError(f"{points.key_text(point)}: reference {name} is {want!r}; a baseline value "
                               "must be a positive number (re-record it)")
        if not valid_value(got):  # the reference measured it, this run did not (or measured nonsense)
            out.append(Verdict(*who, g.label or name, float("nan"), want, float("nan"), "regressed", g.group,
                               f"this run measured {name} = {got!r}"))
            continue
        note = ""
        if g.samples:
            outcome, delta, detail, note = _statistical(field, point, ref, tol[g.group])
        else:
            lo, hi = band(name, ref)
            want = statistics.median([lo, hi])
            outcome, delta, detail = _threshold(field, got, lo, hi, tol[g.group]), got / want - 1, ""
            if lo != hi:
                detail = f"recorded {lo:.6g}..{hi:.6g} over {len(points.observed(ref)[name])} processes"
            if outcome == "improved" and two_sided:
                detail = "; ".join(filter(None, [detail, "the budget is stale (re-record it: --update-budgets)"]))
            if outcome == "regressed" and g.group == "device_time" and (
                    clock := _slower_clock(point, ref, delta, tol[g.group])):
                outcome, (detail, note) = "inconclusive", clock
        out.append(Verdict(*who, g.label or name, got, want, delta, outcome, g.group, detail, note, two_sided))
    return out


def options_mismatch(point: dict, ref: dict) -> str | None:
    """Why `ref` did not measure what `point` ran (the plugin's own options, e.g. the fast profile's
    overlap_communication=False), or None. A budget or baseline recorded before points carried their
    options ran every plugin at the entry's own values: missing means {}."""
    got, want = point.get("plugin_options") or {}, ref.get("plugin_options") or {}
    if got == want:
        return None
    diff = ", ".join(f"{k}={got.get(k, '(entry default)')} (recorded with {want.get(k, '(entry default)')})"
                     for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k))
    return (f"plugin options differ from the recorded ones: {diff}; these numbers do not compare: "
            "re-record the budget (--update-budgets) or the baseline with the same options")


def compare(point: dict, ref: dict, *, tol: dict[str, float] | None = None, groups=None) -> list[Verdict]:
    """The failing verdicts among judge()'s (budgets.fails)."""
    return [v for v in judge(point, ref, tol=tol, groups=groups) if fails(v)]


def change(point: dict, ref: dict, field: str = "images_per_s") -> float | None:
    """Relative change of one field, point against ref (None where either lacks it)."""
    got, want = point.get(field), ref.get(field)
    return got / want - 1 if got is not None and want else None


# --- a run against a baseline run (the merge gate) -------------------------------------------------
def check_baseline(baseline: list[dict], *, source, device: str, planned=None, allow_missing: bool = False) -> None:
    """Fail closed before anything is measured: a baseline with no usable point, of another device
    (named), with a zero or NaN gated value, or with points this run will not measure (unless
    allow_missing) is an error naming it."""
    ok = [p for p in baseline if p.get("status") == "ok"]
    if not ok:
        raise VitcoreError(f"baseline {source} holds no finished point to compare with")
    devices = sorted({points.device_key(p) for p in ok})
    if device not in devices:
        raise VitcoreError(f"baseline {source} was measured on {', '.join(devices)}; this run is on {device}: "
                           "record a baseline on this device")
    mine = [p for p in ok if points.device_key(p) == device]
    for p in mine:
        for name in (n for f in points.gated() for n in (f.name, f.gate.fallback) if n):
            v = p.get(name)
            if v is not None and not valid_value(v):
                raise VitcoreError(f"baseline {source}: {points.key_text(p)} has {name} = {v!r}; a baseline "
                                   "value must be a positive number")
    if planned is not None and not allow_missing:
        absent = [points.key_text(p) for p in mine if points.key(p) not in planned]
        if absent:
            raise VitcoreError(f"baseline {source} has {len(absent)} point(s) this run does not measure "
                               f"({', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}); measure them "
                               "or pass --allow-missing")


@dataclass
class GateResult:
    verdicts: dict  # point key -> [Verdict]
    regressions: list[str]
    improvements: list[str]  # beyond the tolerance in the good direction: update the baseline
    inconclusive: list[str]
    new: list[str]  # current points the baseline does not have

    def failed(self, strict: bool = False) -> bool:
        return bool(self.regressions or (strict and self.improvements))


def compare_runs(current: list[dict], baseline: list[dict], tol: dict[str, float] | None = None, *,
                 allow_missing: bool = False, revisions: bool = False) -> GateResult:
    """Every current point against the baseline point of the same identity on the same device; a
    baseline point of this device that the run lacks is a regression unless allow_missing.
    revisions: the baseline is the base revision measured beside the head in one run (`vitcore ab`; see
    judge)."""
    base = {(points.device_key(p), points.key(p)): p for p in baseline if p.get("status") == "ok"}
    res = GateResult({}, [], [], [], [])
    seen = set()
    for p in current:
        k, dev = points.key(p), points.device_key(p)
        seen.add((dev, k))
        name = " ".join(map(str, k))
        ref = base.get((dev, k))
        if ref is None:
            res.new.append(f"{name}: not in the baseline (on {dev})")
            continue
        res.verdicts[k] = verdicts = judge(p, ref, tol=tol, revisions=revisions)
        for v in verdicts:
            line = f"{name}: {v}" if v.group == "status" else str(v)
            (res.regressions if fails(v) else {"improved": res.improvements, "inconclusive": res.inconclusive}
             .get(v.outcome, [])).append(line)
    devices = {dev for dev, _ in seen}
    for (dev, k), p in base.items():
        if dev in devices and (dev, k) not in seen and not allow_missing:
            res.regressions.append(f"{points.key_text(p)}: in the baseline, missing from this run")
    return res


def verdict_cell(verdicts: list[Verdict]) -> str:
    """One report cell: each metric's outcome."""
    return "; ".join(v.short() for v in verdicts) if verdicts else "no budget"
