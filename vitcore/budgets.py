"""Per-device performance budgets and THE regression rule.

One rule serves the GPU tier's performance tests (a point against this device's budget entry) and
the merge gate (`vitcore bench --compare` / `vitcore report --baseline`: a run against a baseline
run). Which fields are gated, in which direction and with which default tolerance is declared in
the point schema (vitcore.points: Field.gate); `--fail-on group:N%` overrides a group's tolerance.

A budget entry is a measured point's gated values with its spread and provenance, never a number
typed in, and never a private copy of the tolerance: changing a default changes every verdict.
Only `--update-budgets` writes entries. Peak memory is deterministic (the steady-state peak
reproduced to the byte between runs on an H100), so every measured point gets a memory budget;
throughput gets one only where its windows are steady enough to be a baseline, and a refused one is
stored with the reason, which the throughput check reports as its skip.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vitcore import ConfigError, VitcoreError, points
from vitcore.results import write_json

# (max - min) / median over repeats above this is not a throughput baseline: window noise must sit
# well inside the allowed regression. Measured on an H100: a low_level_zero entry recorded at 4.6%
# spread came back 8% slower on the next run of the same code (noise, failing a 7% budget); entries
# at 0-3% spread (torch_ddp fp32, torch_fsdp bf16) reproduced within 1%.
MAX_BASELINE_SPREAD = points.THROUGHPUT.tolerance / 2


class NoBudget(VitcoreError):
    """No budget for this device, point or metric: the caller skips with this reason."""


@dataclass
class Violation:
    plugin: str
    precision: str
    batch_size: int
    metric: str
    measured: float
    budget: float
    delta: float  # relative, signed: measured / budget - 1

    def __str__(self):
        return (f"{self.plugin} {self.precision} bs={self.batch_size}: {self.metric} {self.measured:.4g} "
                f"vs budget {self.budget:.4g} ({self.delta:+.1%})")


# --- the rule -------------------------------------------------------------------------------------
def tolerances(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Each gate group's allowed relative change: the schema's default unless overridden."""
    out = {f.gate.group: f.gate.tolerance for f in points.gated()}
    return out | (overrides or {})


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


def compare(point: dict, ref: dict, *, tol: dict[str, float] | None = None,
            groups=None) -> list[Violation]:
    """The violations of `point` against `ref` (a budget entry or a baseline point) in the gate
    `groups` (default: all). A field regresses when it moved in its `worse` direction by more than
    its group's tolerance; improvements never fail; a field `ref` lacks is not compared. A point
    that did not finish ("oom", "error") is a violation of its own."""
    tol = tolerances(tol)
    if point.get("status") != "ok":
        return [Violation(point["plugin"], point["precision"], point["batch_size"],
                          f"status {point.get('status')}", float("nan"), ref.get("images_per_s") or float("nan"),
                          float("nan"))]
    out = []
    for field in points.gated():
        if groups is not None and field.gate.group not in groups:
            continue
        name = compared_field(field, point, ref)
        got, want, t = point.get(name), ref.get(name), tol[field.gate.group]
        if got is None or not want:
            continue
        worse = got < want * (1 - t) if field.gate.worse == "lower" else got > want * (1 + t)
        if worse:
            out.append(Violation(point["plugin"], point["precision"], point["batch_size"],
                                 field.gate.label or name, got, want, got / want - 1))
    return out


def change(point: dict, ref: dict, field: str = "images_per_s") -> float | None:
    """Relative change of one field, point against ref (None where either lacks it)."""
    got, want = point.get(field), ref.get(field)
    return got / want - 1 if got is not None and want else None


# --- budget files: one per device identity ----------------------------------------------------------
def budget_path(folder, env: dict) -> Path:
    return Path(folder) / f"{points.device_key(env)}.json"


def load(folder, env: dict) -> dict:
    path = budget_path(folder, env)
    if not path.exists():
        known = sorted(p.stem for p in Path(folder).glob("*.json"))
        raise NoBudget(f"no budget file for device {points.device_key(env)!r} in {folder} "
                       f"(budgets exist for: {', '.join(known) or 'none'}); "
                       "run with --update-budgets on this device to record one")
    return json.loads(path.read_text())


def lookup(book: dict, point: dict) -> dict:
    try:
        return book["entries"][points.key_text(point)]
    except KeyError:
        raise NoBudget(f"no budget entry {points.key_text(point)!r} for this device; "
                       "run with --update-budgets to record one") from None


def require_throughput(entry: dict, point: dict) -> None:
    """NoBudget unless `entry` holds a throughput baseline (its memory budget stands either way)."""
    if entry.get("images_per_s") is None:
        raise NoBudget(f"{points.key_text(point)}: no throughput baseline on this device: "
                       f"{entry.get('throughput_refused', 'not recorded')}")
    if entry.get("spread", 0) > MAX_BASELINE_SPREAD:  # recorded under a looser rule
        raise NoBudget(f"{points.key_text(point)}: throughput recorded with spread {entry['spread']:.1%}, "
                       f"above the {MAX_BASELINE_SPREAD:.1%} a baseline may have; re-record it with "
                       "--update-budgets on a quieter machine")


def check(folder, point: dict, group: str) -> tuple[dict, list[Violation]]:
    """The budget entry of `point` on its device and the violations of one gate group ("memory" or
    "throughput"); NoBudget where there is no budget for that group (the reason says why)."""
    entry = lookup(load(folder, point), point)
    if group == "throughput":
        require_throughput(entry, point)
    return entry, compare(point, entry, groups=(group,))


def make_entry(point: dict) -> dict:
    """The point's gated values, spread and provenance (throughput only where steady enough)."""
    if point.get("status") != "ok":
        raise VitcoreError(f"{points.key_text(point)}: status {point.get('status')} cannot be a budget")
    if point.get("variant"):
        raise VitcoreError(f"{points.key_text(point)}: ablation variant {point['variant']!r} is not a budget")
    names = {n for f in points.gated() for n in (f.name, f.gate.fallback) if n}
    entry = {n: point.get(n) for n in sorted(names)} | {"spread": point["spread"]}
    if point["spread"] > MAX_BASELINE_SPREAD:
        entry |= {"images_per_s": None, "observed_images_per_s": point["images_per_s"],
                  "throughput_refused": f"spread {point['spread']:.1%} over {point['repeats']} repeats exceeds "
                                        f"{MAX_BASELINE_SPREAD:.1%}; too noisy to be a baseline (raise "
                                        "--repeats/steps or quiet the machine)"}
    return entry | {"source": points.provenance(point)}


def update(folder, point: dict) -> tuple[Path, dict]:
    """Record `point` as the budget of its entry on this device (read-modify-write, atomic);
    returns the file and the entry (its `throughput_refused` says why throughput has none)."""
    path = budget_path(folder, point)
    book = json.loads(path.read_text()) if path.exists() else {
        "identity": points.device_key(point),
        "device": {k: point.get(k) for k in ("gpu_name", "gpu_count", "torch", "cuda")},
        "entries": {}}
    book["entries"][points.key_text(point)] = entry = make_entry(point)
    write_json(path, book)
    return path, entry


# --- a run against a baseline run (the merge gate) -------------------------------------------------
@dataclass
class GateResult:
    regressions: list[str]
    improvements: list[str]
    missing: list[str]
    verdicts: dict  # point key -> one-line verdict for the report


def compare_runs(current: list[dict], baseline: list[dict], tol: dict[str, float] | None = None) -> GateResult:
    """Every current point against the baseline point of the same identity on the same device."""
    base = {(points.device_key(p), points.key(p)): p for p in baseline if p.get("status") == "ok"}
    res = GateResult([], [], [], {})
    for p in current:
        k = points.key(p)
        name = " ".join(map(str, k))
        ref = base.get((points.device_key(p), k))
        if ref is None:
            res.missing.append(f"{name}: not in the baseline (on {points.device_key(p)})")
            continue
        if p.get("status") != "ok":
            res.regressions.append(f"{name}: status {p.get('status')} (baseline ok)")
            res.verdicts[k] = f"FAIL: {p.get('status')}"
            continue
        violations = compare(p, ref, tol=tol)
        delta = change(p, ref)
        if violations:
            res.regressions += map(str, violations)
            res.verdicts[k] = "FAIL " + "; ".join(f"{v.metric} {v.delta:+.1%}" for v in violations)
        else:
            res.verdicts[k] = "ok" if delta is None else f"ok (images/s {delta:+.1%})"
            if delta and delta > 0:
                res.improvements.append(f"{name}: images/s {delta:+.1%}")
    return res
