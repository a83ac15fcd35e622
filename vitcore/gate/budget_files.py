"""Budget files: what `--update-budgets` recorded, one file per device, and the portable invariants
every GPU of one architecture and software stack shares.

A file per device identity (GPU model and count, torch, CUDA): `<folder>/<device>.json`. Its header
names the device's architecture key (points.arch_key: compute capability, SM count, torch, CUDA,
colossalai, transformers). Per-device metrics (device time, wall time) are judged against this
device's own file only. Portable ones (Gate.portable: launches, allocated memory) against this
device's entry, or where it has none, the entry of any file with the same architecture key: a new
GPU of a known architecture is judged on them from its first run. Recording an invariant that
contradicts another device's of the same key fails, naming both, unless explicitly allowed.

An entry is measured values only, never a number typed in, and never a private copy of a tolerance:
each budgeted metric's value in every process that recorded it (`observed`), the wall-time samples,
and provenance. Only `--update-budgets` writes entries.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from vitcore import VitcoreError
from vitcore.files import write_json
from vitcore.gate import budgets
from vitcore.spec import points
from vitcore.spec.env import device_identity

RECORD_HINT = ("record this device's budgets: pytest -m gpu -k performance --update-budgets "
               "(or vitcore bench --update-budgets fixtures/budgets)")
MIN_RECORD_PROCESSES = 3  # a budget is the band several fresh processes span (docs/gate.md)


class NoBudget(VitcoreError):
    """No budget for this device, point or metric; the message names the device and how to record."""


class InvariantConflict(VitcoreError):
    """A recording whose portable invariant contradicts another device's of the same architecture."""


def budget_path(folder, env: dict) -> Path:
    return Path(folder) / f"{device_identity(env)}.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VitcoreError(f"budget file {path} cannot be read: {type(e).__name__}: {e}") from None


def load(folder, env: dict) -> dict:
    path = budget_path(folder, env)
    if not path.exists():
        known = sorted(p.stem for p in Path(folder).glob("*.json"))
        raise NoBudget(f"no budget file for device {device_identity(env)!r} in {folder} "
                       f"(budgets exist for: {', '.join(known) or 'none'}); {RECORD_HINT}")
    return _read(path)


def lookup(book: dict, point: dict) -> dict:
    try:
        return book["entries"][points.key_text(point)]
    except KeyError:
        raise NoBudget(f"no budget entry {points.key_text(point)!r} for device {device_identity(point)!r}; "
                       f"{RECORD_HINT}") from None


_NO_ENTRY = re.compile(r"^no budget entry '(?P<key>[^']+)' for device '(?P<device>[^']+)'$")


def join_missing(reasons: list[str]) -> str:
    """Several NoBudget reasons as one line: the record command once, and the entries one device
    lacks listed together (a test of 2 points on a new GPU said the same sentence twice)."""
    bare, hint = [], False
    for r in dict.fromkeys(reasons):
        hint |= r.endswith(f"; {RECORD_HINT}")
        bare.append(r.removesuffix(f"; {RECORD_HINT}"))
    by_device: dict[str, list[str]] = {}
    rest = []
    for r in bare:
        m = _NO_ENTRY.match(r)
        if m:
            by_device.setdefault(m["device"], []).append(m["key"])
        else:
            rest.append(r)
    parts = rest + [f"no budget entr{'y' if len(keys) == 1 else 'ies'} {', '.join(repr(k) for k in keys)} for device {d!r}"
                    for d, keys in by_device.items()]
    return "; ".join(parts + ([RECORD_HINT] if hint else []))


def same_arch(folder, point: dict) -> list[tuple[str, dict]]:
    """(device identity, book) of every other device's file with the point's architecture key."""
    arch = points.arch_key(point)
    if arch is None:
        return []
    mine = budget_path(folder, point)
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        if path != mine and (book := _read(path)).get("arch") == arch:
            out.append((path.stem, book))
    return out


def reference(folder, point: dict, group: str) -> tuple[dict, str]:
    """The entry `point` is judged against in `group`, and the device that recorded it."""
    own = budget_path(folder, point)
    if own.exists() and points.key_text(point) in (book := _read(own)).get("entries", {}):
        return book["entries"][points.key_text(point)], own.stem
    if points.portable(group):
        for device, other in same_arch(folder, point):
            if points.key_text(point) in other.get("entries", {}):
                return other["entries"][points.key_text(point)], device
    lookup(load(folder, point), point)  # raises the NoBudget naming what is missing
    raise AssertionError("unreachable")


def check(folder, point: dict, group: str) -> tuple[dict, list[budgets.Verdict], str]:
    """The reference entry of `point`, the verdicts of one gate group, and which device recorded it;
    NoBudget where nothing applies (the reason says what is missing and how to record it)."""
    entry, device = reference(folder, point, group)
    verdicts = budgets.judge(point, entry, groups=(group,))
    if not verdicts and point.get("status") == "ok":
        raise NoBudget(f"{points.key_text(point)}: the budget entry of {device} has no {group} "
                       f"(recorded by an older version); {RECORD_HINT}")
    return entry, verdicts, device


def make_entry(point: dict) -> dict:
    """The point's gated values, each process's value of every budgeted metric, the wall-time samples,
    spread, the number of processes, and provenance."""
    if point.get("status") != "ok":
        raise VitcoreError(f"{points.key_text(point)}: status {point.get('status')} cannot be a budget")
    if point.get("variant"):
        raise VitcoreError(f"{points.key_text(point)}: ablation variant {point['variant']!r} is not a budget")
    if point.get("injected"):
        raise VitcoreError(f"{points.key_text(point)}: a point with an injected regression "
                           f"({point['injected']}) is not a budget")
    names = {n for f in points.gated() for n in (f.name, f.gate.fallback, f.gate.samples) if n}
    # shown beside the verdicts, never gated; the clocks qualify device time (budgets.sm_clock)
    names |= {"images_per_s_windows", "copy_ms_per_step", "device_sm_clock_mhz", "host_sm_clock_mhz_windows",
              "steady_mem_reserved_gib", "peak_mem_reserved_gib"}
    entry = {n: point.get(n) for n in sorted(names)} | {"images_per_s_process_medians": points.process_medians(point)}
    return entry | {"observed": points.observed(point), "spread": point.get("spread"),
                    "processes": point.get("processes") or 1,
                    "plugin_options": dict(point.get("plugin_options") or {}), "source": points.provenance(point)}


def spread_notes(entry: dict) -> list[str]:
    """Where a metric's recorded spread over the processes is wider than its tolerance: the band
    (the observed range, widened by the tolerance) is then wider than the tolerance alone."""
    out, tol = [], budgets.tolerances()
    for f in points.gated():
        seen = entry.get("observed", {}).get(f.name) or []
        if len(seen) > 1 and (mid := statistics.median(seen)) and (max(seen) - min(seen)) / mid > tol[f.gate.group]:
            out.append(f"{f.name} spread {(max(seen) - min(seen)) / mid:.2%} over {len(seen)} processes exceeds "
                       f"its tolerance {tol[f.gate.group]:.1%}: judged against {min(seen):.6g}..{max(seen):.6g} "
                       f"widened by {tol[f.gate.group]:.1%}")
    return out


def changes(old: dict | None, new: dict) -> list[str]:
    """What a recording changed in one entry, metric by metric, for review."""
    if old is None:
        return ["new entry"]
    out = []
    for f in points.gated():
        a, b = old.get(f.name), new.get(f.name)
        if a != b:
            out.append(f"{f.name} {a if a is None else f'{a:.6g}'} -> {b if b is None else f'{b:.6g}'}"
                       + (f" ({b / a - 1:+.2%})" if a and b else ""))
    if old.get("plugin_options", {}) != new.get("plugin_options", {}):
        out.append(f"plugin_options {old.get('plugin_options')} -> {new['plugin_options']}")
    return out or ["unchanged gated values"]


def conflicts(folder, point: dict) -> list[str]:
    """The portable invariants of `point` that another device of its architecture recorded otherwise."""
    out = []
    groups = [g for g in points.gate_groups() if points.portable(g)]
    for device, book in same_arch(folder, point):
        entry = book.get("entries", {}).get(points.key_text(point))
        if entry is None or budgets.options_mismatch(point, entry):
            continue
        for v in budgets.judge(point, entry, groups=groups):
            if budgets.fails(v) or v.outcome == "improved":
                out.append(f"{v} (recorded on {device})")
    return out


def update(folder, point: dict, *, allow_invariant_change: bool = False) -> tuple[Path, dict, list[str]]:
    """Record `point` as its entry's budget on its device (read-modify-write, atomic). Returns the file,
    the entry and the review lines (what changed, spreads wider than their tolerance). A portable
    invariant contradicting another device's of the same architecture raises InvariantConflict,
    naming both, unless allow_invariant_change (then it is one of the review lines)."""
    entry = make_entry(point)
    clash = conflicts(folder, point)
    if clash and not allow_invariant_change:
        raise InvariantConflict(f"{points.key_text(point)} on {device_identity(point)} contradicts the same "
                                f"architecture's invariants: {'; '.join(clash)}; if the code changed them on "
                                "purpose, re-record every device of this architecture or pass "
                                "--allow-invariant-change")
    path = budget_path(folder, point)
    book = _read(path) if path.exists() else {"identity": device_identity(point), "entries": {}}
    book["arch"] = points.arch_key(point)
    book["device"] = {k: point.get(k) for k in ("gpu_name", "gpu_count", "gpu_compute_capability", "gpu_sm_count",
                                                "torch", "cuda", "colossalai", "transformers")}
    old = book["entries"].get(points.key_text(point))
    book["entries"][points.key_text(point)] = entry
    write_json(path, book)
    review = changes(old, entry) + spread_notes(entry) + [f"allowed invariant change: {c}" for c in clash]
    return path, entry, review
