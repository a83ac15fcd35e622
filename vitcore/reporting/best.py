"""Each plugin at its best beside timm compiled, and issue 29's targets stated against it.

A family's best point at a batch size is its fastest finished point there, eager or compiled (the
`--ablate compile` variant counts: a user would compile where it works). It is set against
`timm_compiled` measured in the same run at the same batch size. Wall throughput moves with the
host, while device time (the sum of kernel durations per step) reproduces to 0.2-0.4% on the H200.
The table therefore shows both, plus the host time the step leaves exposed: wall ms/step less
device ms/step. That figure is what holds a host-bound point back.
"""

from __future__ import annotations

from vitcore.reporting.analysis import TARGETS, family, ok_points, perf_points, targets
from vitcore.reporting.markdown import fmt, md_table, times

TIMM = "timm_compiled"
TARGET_BATCHES = (128, 512)  # issue 29: the best plugin at both, every family at the first


def _ms_per_step(p: dict) -> float:
    return 1e3 * p["batch_size"] / p["images_per_s"]


def exposed_host_ms(p: dict) -> float | None:
    """Wall ms/step beyond the device's kernel time: the host work the GPU waits on (None unmeasured)."""
    dev = p.get("device_ms_per_step")
    return _ms_per_step(p) - dev if dev else None


def best_rows(points: list[dict]) -> list[dict]:
    """Per family and batch size with a timm_compiled point beside it: the family's fastest point and
    its wall and device-time ratios to timm compiled (above 1: faster than timm)."""
    ok = [p for p in ok_points(points) if p.get("images_per_s")]
    timm = {(p["model"], p["batch_size"]): p for p in ok if p["plugin"] == TIMM and not p.get("variant")}
    best: dict[tuple, dict] = {}
    for p in ok:
        if family(p) == "reference" or (p.get("model"), p["batch_size"]) not in timm:
            continue
        key = (family(p), p["model"], p["batch_size"])
        if key not in best or p["images_per_s"] > best[key]["images_per_s"]:
            best[key] = p
    rows = []
    for (fam, model, bs), p in sorted(best.items()):
        t = timm[(model, bs)]
        dev, tdev = p.get("device_ms_per_step"), t.get("device_ms_per_step")
        rows.append({"family": fam, "model": model, "batch_size": bs, "point": p, "timm": t,
                     "wall_ratio": p["images_per_s"] / t["images_per_s"],
                     "device_ratio": tdev / dev if dev and tdev else None,
                     "exposed_host_ms": exposed_host_ms(p), "timm_exposed_host_ms": exposed_host_ms(t)})
    return rows


def _label(p: dict) -> str:
    return f"{p['plugin']} {p.get('precision')}" + (" compiled" if p.get("compile") else "")


def best_table(points: list[dict]) -> str:
    rows = best_rows(points)
    if not rows:
        return "(no timm_compiled point beside the plugins: `vitcore bench` on a GPU with timm installed measures it)"
    head = ["family", "bs", "best point", "img/s", "× timm compiled (wall)", "device ms/step", "× timm (device)",
            "exposed host ms/step", "MFU"]
    cells = [[r["family"], r["batch_size"], _label(r["point"]), fmt(r["point"]["images_per_s"]), times(r["wall_ratio"]),
              fmt(r["point"].get("device_ms_per_step"), ".2f"), times(r["device_ratio"]),
              fmt(r["exposed_host_ms"], ".1f"), fmt(r["point"].get("mfu"), ".1%")] for r in rows]
    t = {r["batch_size"]: r["timm"] for r in rows}
    cells += [["timm (reference)", bs, "timm_compiled bf16", fmt(p["images_per_s"]), "1.00x",
               fmt(p.get("device_ms_per_step"), ".2f"), "1.00x", fmt(exposed_host_ms(p), ".1f"), fmt(p.get("mfu"), ".1%")]
              for bs, p in sorted(t.items())]
    return "\n".join(md_table(head, cells))


def _held_back(r: dict) -> str:
    """What keeps a point under timm compiled, from its own measurements: its device time, the host
    time it leaves exposed beyond timm's, or both."""
    if r["device_ratio"] is None:
        return "device time not measured"
    why = []
    if r["device_ratio"] < 1.0:
        why.append(f"device time {r['point']['device_ms_per_step']:.2f} ms/step against timm's "
                   f"{r['timm']['device_ms_per_step']:.2f} ({times(r['device_ratio'])})")
    if (r["exposed_host_ms"] or 0.0) > (r["timm_exposed_host_ms"] or 0.0):
        why.append(f"host: {r['exposed_host_ms']:.1f} ms/step of wall beyond its device time "
                   f"(timm {r['timm_exposed_host_ms']:.1f})")
    return " and ".join(why) or "nothing measured here (within noise of timm)"


def best_targets(points: list[dict]) -> list[str]:
    """Issue 29's targets as met / not met with the measured figure. Every family the run tried is
    stated at the first target batch size: one with no finished point there is not met, never left out."""
    rows = best_rows(points)
    if not rows:
        return []
    families = {family(p) for p in perf_points(points) if family(p) != "reference"}
    t, out = TARGETS, []
    for bs in TARGET_BATCHES:
        at = [r for r in rows if r["batch_size"] == bs]
        if not at:
            out.append(f"best plugin >= {t['best_vs_timm_compiled']:.1f}x timm compiled at bs{bs}: NOT met (not measured)")
            continue
        wall = max(at, key=lambda r: r["wall_ratio"])
        ok = wall["wall_ratio"] >= t["best_vs_timm_compiled"]
        out.append(f"best plugin at bs{bs}, wall: {_label(wall['point'])} {times(wall['wall_ratio'])} timm compiled "
                   f"(target {t['best_vs_timm_compiled']:.1f}x): " + ("met" if ok else f"NOT met; held back by {_held_back(wall)}"))
        dev = [r for r in at if r["device_ratio"] is not None]
        if dev:
            d = max(dev, key=lambda r: r["device_ratio"])
            ok = d["device_ratio"] >= t["best_vs_timm_compiled"]
            out.append(f"best plugin at bs{bs}, device time: {_label(d['point'])} {times(d['device_ratio'])} timm compiled: "
                       + ("met" if ok else f"NOT met ({d['point']['device_ms_per_step']:.2f} ms/step against timm's "
                                             f"{d['timm']['device_ms_per_step']:.2f})"))
    first = TARGET_BATCHES[0]
    by_family = {r["family"]: r for r in rows if r["batch_size"] == first}
    for fam in sorted(set(by_family) | set(families)):
        r = by_family.get(fam)
        if r is None or r["device_ratio"] is None:
            out.append(f"{fam} >= {t['family_device_vs_timm_compiled']:.1f}x timm compiled on device time at bs{first}: "
                       "NOT met (not measured in this run)")
            continue
        ok = r["device_ratio"] >= t["family_device_vs_timm_compiled"]
        out.append(f"{fam} at bs{first}, device time: {_label(r['point'])} {times(r['device_ratio'])} timm compiled "
                   f"(target {t['family_device_vs_timm_compiled']:.1f}x): {'met' if ok else 'NOT met'}")
    mfu = [r for r in rows if r["point"].get("mfu") is not None]
    if mfu:
        m = max(mfu, key=lambda r: r["point"]["mfu"])
        ok = m["point"]["mfu"] >= t["best_mfu"]
        timm_best = max(r["timm"].get("mfu") or 0.0 for r in rows)
        out.append(f"best point MFU: {_label(m['point'])} bs{m['batch_size']} {m['point']['mfu']:.1%} (target "
                   f"{t['best_mfu']:.0%}; timm compiled {timm_best:.1%}): {'met' if ok else 'NOT met'}")
    return out


def all_targets(points: list[dict]) -> list[str]:
    """Every target the report states: the earlier issues' (analysis.targets) and issue 29's."""
    return targets(points) + best_targets(points)
