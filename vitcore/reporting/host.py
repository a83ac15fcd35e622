"""The report's host-time table (issue 29): per traced plugin point, the host time per step beyond
its reference's and the upstream functions that take it.

Host time here is the profiled host work of vitcore.measure.host_profile: the 5 profiled steps'
wall time per step less the waits on the device. Its reference is the traced plain-PyTorch point of
the same model, batch size, precision and device (analysis.references): the bare twin of the
point's own entry where measured (the same loop without the Booster), else the reference loop with
the same compile setting, else any other. A point without one is named as such, never given 0.
"""

from __future__ import annotations

from vitcore.measure.host_profile import attribution_failure
from vitcore.reporting.analysis import REFERENCES, family, perf_points, references
from vitcore.reporting.markdown import fmt, md_table

NOT_TRACED = "(not traced: `vitcore bench --trace` measures it)"
SHOWN_FUNCTIONS = 3  # of the point's top 8 (points.json holds them all)


def traced(p: dict) -> bool:
    return p.get("status") == "ok" and p.get("host_profiled_ms_per_step") is not None


def busy_ms(p: dict) -> float:
    """Host work per step: profiled host time less the time blocked on the device."""
    return p["host_profiled_ms_per_step"] - (p.get("host_wait_ms_per_step") or 0.0)


def _same_setting(p: dict, r: dict) -> bool:
    return all(p.get(k) == r.get(k) for k in ("model", "batch_size", "precision", "device"))


def _preference(p: dict, r: dict) -> tuple:
    """Lower first: the point's own bare twin, the reference loop compiled as the point is, the
    reference loops in REFERENCES' order, then the rest (timm's) by name."""
    loop = REFERENCES.index(r["plugin"]) if r["plugin"] in REFERENCES else len(REFERENCES)
    return (r.get("mirrors") != p["plugin"], bool(r.get("compile")) != bool(p.get("compile")), loop, r["plugin"])


def attribution(p: dict) -> str:
    """Why a point's split by package is withheld ("" where it holds): its own record, or the same rule
    applied to a point recorded before the rule existed (its ms/step stand in for the self times)."""
    if p.get("host_attribution") is not None:
        return p["host_attribution"]
    by = p.get("host_by_package")
    return attribution_failure(by, python_frames=-1) if by else ""


def reference_for(p: dict, refs: list[dict]) -> dict | None:
    """The traced reference point a plugin point is set against, or None."""
    same = [r for r in refs if traced(r) and _same_setting(p, r)]
    return min(same, key=lambda r: _preference(p, r)) if same else None


def host_rows(points: list[dict]) -> list[dict]:
    """One row per traced plugin point: its host work per step, its reference's (None and
    `missing` saying which where there is none), the difference per package, its top functions."""
    perf = perf_points(points)
    refs = references(perf)
    rows = []
    for p in perf:
        if not traced(p) or family(p) == "reference":
            continue
        r = reference_for(p, refs)
        theirs_withheld = attribution(r) if r else ""
        withheld = attribution(p) or (f"reference: {theirs_withheld}" if theirs_withheld else "")
        mine, theirs = p.get("host_by_package") or {}, (r or {}).get("host_by_package") or {}
        row = {"plugin": p["plugin"], "precision": p.get("precision"), "profile": p.get("profile"),
               "variant": p.get("variant") or "", "batch_size": p["batch_size"], "device": p.get("device"),
               "host_ms": busy_ms(p), "wait_ms": p.get("host_wait_ms_per_step"),
               "profiled_ms": p["host_profiled_ms_per_step"], "by_package": mine,
               "functions": list(p.get("host_functions") or []),
               # the split by package is withheld where host_profile judged it not credible, on either side
               "attribution": withheld,
               "reference": r["plugin"] if r else None, "reference_host_ms": busy_ms(r) if r else None,
               "beyond_ms": busy_ms(p) - busy_ms(r) if r else None,
               # the packages both points name (host_profile writes every one, 0 where unused)
               "beyond_by_package": {k: mine.get(k, 0.0) - theirs.get(k, 0.0) for k in mine.keys() | theirs.keys()}
               if r else None,
               "missing": None if r else (f"no traced reference at {p.get('precision')} bs{p['batch_size']} "
                                          f"{p.get('model')} on this device")}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["plugin"], r["precision"] or "", r["batch_size"], r["variant"]))


def _packages(by: dict | None, sign: str = "") -> str:
    """The packages that take time, largest first: "colossalai +1.20, torch +0.30"."""
    if not by:
        return "-"
    parts = [(k, v) for k, v in sorted(by.items(), key=lambda kv: -abs(kv[1])) if round(v, 2)]
    return ", ".join(f"{k} {v:{sign}.2f}" for k, v in parts) or "0"


def host_table(points: list[dict]) -> str:
    """Markdown: host ms/step, the reference's, the difference by package and the top functions;
    the one-line note where nothing was traced."""
    rows = host_rows(points)
    if not rows:
        return NOT_TRACED
    head = ["plugin", "precision", "bs", "host ms/step (wait on device)", "reference", "reference host ms/step",
            "beyond reference ms/step", "beyond, by package (ms/step)", f"top {SHOWN_FUNCTIONS} functions (ms/step)"]
    cells = []
    for r in rows:
        fns = "; ".join(f"{f['name']} [{f['package']}] {f['ms_per_step']:.2f}" for f in r["functions"][:SHOWN_FUNCTIONS])
        cells.append([r["plugin"] + (f" ({r['variant']})" if r["variant"] else ""), r["precision"], r["batch_size"],
                      f"{fmt(r['host_ms'], '.2f')} ({fmt(r['wait_ms'], '.2f')})", r["reference"] or r["missing"],
                      fmt(r["reference_host_ms"], ".2f"), fmt(r["beyond_ms"], "+.2f"),
                      r["attribution"] or _packages(r["beyond_by_package"], "+"),
                      "-" if r["attribution"] else (fns or "-").replace("|", "\\|")])
    return "\n".join(["Profiled host work per step (5 steps, --trace): wall less the waits on the device; "
                      "the Python tracer's cost is in both sides (docs/performance.md).", ""] + md_table(head, cells))
