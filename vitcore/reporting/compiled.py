"""The report's compile table (issue 29): each entry eager beside compiled, from one run's points.

A compiled point is one with `compile` true (`vitcore bench --ablate compile` measures both, or the
fast profile where an entry's plan admits compile); its eager twin is the point of the same entry,
precision, model and batch size without it. A compiled point that failed carries the upstream error's
first line (`vitcore.measure.bench.measure_group`): the table shows it as the reason compile does not
work with that plugin, measured in this run.
"""

from __future__ import annotations

from vitcore.reporting.analysis import perf_points
from vitcore.reporting.markdown import fmt, md_table, times

# The plain loops measure eager and compiled as two names, not as a variant of one
REFERENCE_PAIRS = {"reference_compiled": "reference_eager", "timm_compiled": "timm_eager"}


def _twin_key(p: dict) -> tuple:
    name = REFERENCE_PAIRS.get(p["plugin"], p["plugin"])
    return name, p.get("precision"), p.get("model"), p.get("world_size", 1), p["batch_size"]


def compile_rows(points: list[dict]) -> list[dict]:
    """One row per compiled point: its eager twin (None where not measured), the speed-up and the reason
    where it failed. Eager twins are the points without a variant or with variant compile=False."""
    perf = perf_points(points)
    eager = {_twin_key(p): p for p in perf if not p.get("compile") and p.get("variant", "") in ("", "compile=False")}
    rows = []
    for p in perf:
        if not p.get("compile"):
            continue
        e = eager.get(_twin_key(p))
        ok = p.get("status") == "ok" and e is not None and e.get("status") == "ok"
        rows.append({"plugin": p["plugin"], "precision": p.get("precision"), "batch_size": p["batch_size"],
                     "plan": p.get("compile_plan") or "", "status": p.get("status"), "error": p.get("error") or "",
                     "eager": e, "compiled": p,
                     "speedup": p["images_per_s"] / e["images_per_s"] if ok and e.get("images_per_s") else None,
                     "device_ratio": (p["device_ms_per_step"] / e["device_ms_per_step"]
                                      if ok and p.get("device_ms_per_step") and e.get("device_ms_per_step") else None)})
    return sorted(rows, key=lambda r: (r["plugin"], r["precision"] or "", r["batch_size"]))


def compile_table(points: list[dict]) -> str:
    """Markdown: eager and compiled images/s, device ms/step and first step per entry and batch size."""
    rows = compile_rows(points)
    if not rows:
        return "(no compiled points: `vitcore bench --ablate compile` measures each entry both ways)"
    head = ["plugin", "precision", "bs", "compiled as", "eager img/s", "compiled img/s", "× eager",
            "device ms eager / compiled", "first step s eager / compiled", "result"]
    cells = []
    for r in rows:
        e, c = r["eager"] or {}, r["compiled"]
        result = "ok" if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        cells.append([r["plugin"], r["precision"], r["batch_size"], r["plan"] or "-",
                      fmt(e.get("images_per_s")), fmt(c.get("images_per_s")), times(r["speedup"]),
                      f"{fmt(e.get('device_ms_per_step'), '.2f')} / {fmt(c.get('device_ms_per_step'), '.2f')}",
                      f"{fmt(e.get('first_step_s'))} / {fmt(c.get('first_step_s'))}", result.replace("|", "\\|")])
    return "\n".join(md_table(head, cells))
