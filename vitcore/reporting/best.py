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


def _setting(p: dict) -> tuple:
    """What a point is set against timm at: the model, batch size and GPU (one process each)."""
    return p.get("model"), p["batch_size"], p.get("gpu_name") or p.get("device")


def _best_per(points: list[dict], key, score) -> dict:
    """{key(p): the point with the highest score(p)} (the first of equals)."""
    best: dict = {}
    for p in points:
        if key(p) not in best or score(p) > score(best[key(p)]):
            best[key(p)] = p
    return best


def _ips(p: dict) -> float:
    return p["images_per_s"]


def _candidates(points: list[dict]) -> tuple[dict, list[dict]]:
    """(the fastest timm_compiled point per setting, the finished single-GPU plugin points): images/s is
    per GPU and a step's wall is batch_size images only in one process, so larger worlds are left out."""
    ok = [p for p in ok_points(points) if p.get("images_per_s") and p.get("world_size", 1) == 1]
    timm = _best_per([p for p in ok if p["plugin"] == TIMM and not p.get("variant")], _setting, _ips)
    return timm, [p for p in ok if family(p) != "reference" and _setting(p) in timm]


def _row(fam: str, p: dict, t: dict) -> dict:
    dev, tdev = p.get("device_ms_per_step"), t.get("device_ms_per_step")
    return {"family": fam, "model": p.get("model"), "batch_size": p["batch_size"], "point": p, "timm": t,
            "wall_ratio": p["images_per_s"] / t["images_per_s"],
            "device_ratio": tdev / dev if dev and tdev else None,
            "exposed_host_ms": exposed_host_ms(p), "timm_exposed_host_ms": exposed_host_ms(t)}


def best_rows(points: list[dict], by: str = "wall") -> list[dict]:
    """Per family and setting with a timm_compiled point beside it: the family's best point (by="wall":
    the most images/s; by="device": the least device time) and its wall and device-time ratios to timm
    compiled (above 1: faster than timm)."""
    timm, plugins_ = _candidates(points)
    if by == "device":
        plugins_, score = [p for p in plugins_ if p.get("device_ms_per_step")], lambda p: -p["device_ms_per_step"]
    else:
        score = _ips
    best = _best_per(plugins_, lambda p: (family(p), *_setting(p)), score)
    return [_row(key[0], p, timm[_setting(p)]) for key, p in sorted(best.items(), key=lambda kv: tuple(map(str, kv[0])))]


def _label(p: dict) -> str:
    compiled = p.get("compile") and not p["plugin"].endswith("_compiled")  # a reference loop names it already
    return f"{p['plugin']} {p.get('precision')}" + (" compiled" if compiled else "")


def best_table(points: list[dict]) -> str:
    rows = best_rows(points)
    if not rows:
        return "(no timm_compiled point beside the plugins: `vitcore bench` on a GPU with timm installed measures it)"
    head = ["family", "bs", "best point", "img/s", "× timm compiled (wall)", "device ms/step", "× timm (device)",
            "exposed host ms/step", "MFU"]
    cells = [[r["family"], r["batch_size"], _label(r["point"]), fmt(r["point"]["images_per_s"]), times(r["wall_ratio"]),
              fmt(r["point"].get("device_ms_per_step"), ".2f"), times(r["device_ratio"]),
              fmt(r["exposed_host_ms"], ".1f"), fmt(r["point"].get("mfu"), ".1%")] for r in rows]
    timm = {_setting(r["timm"]): r["timm"] for r in rows}
    cells += [["timm (reference)", p["batch_size"], _label(p), fmt(p["images_per_s"]), "1.00x",
               fmt(p.get("device_ms_per_step"), ".2f"), "1.00x", fmt(exposed_host_ms(p), ".1f"), fmt(p.get("mfu"), ".1%")]
              for _, p in sorted(timm.items(), key=lambda kv: tuple(map(str, kv[0])))]
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
    return " and ".join(why) or "neither its device time nor its exposed host time (both at least timm's)"


def best_targets(points: list[dict]) -> list[str]:
    """Issue 29's targets as met / not met with the measured figure, each stated wherever the run
    measured a plugin on a GPU: a target nothing here measured is "NOT met (not measured ...)", never
    left out, and every family the run tried is named at the first target batch size."""
    gpu = [p for p in perf_points(points) if family(p) != "reference" and p.get("device") not in (None, "cpu")]
    if not gpu:
        return []
    t, out = TARGETS, []
    rows, dev_rows = best_rows(points), best_rows(points, by="device")
    if not rows:
        timm = [p for p in perf_points(points) if p["plugin"] == TIMM]
        why = f"timm_compiled {timm[0].get('status')}: {timm[0].get('error') or '-'}" if timm else "no timm_compiled point"
        return [f"issue 29's targets against timm compiled: NOT met (not measured: {why})"]
    for bs in TARGET_BATCHES:
        at = [r for r in rows if r["batch_size"] == bs]
        if not at:
            out.append(f"best plugin >= {t['best_vs_timm_compiled']:.1f}x timm compiled at bs{bs}: NOT met (not measured)")
            continue
        wall = max(at, key=lambda r: r["wall_ratio"])
        ok = wall["wall_ratio"] >= t["best_vs_timm_compiled"]
        out.append(f"best plugin at bs{bs}, wall: {_label(wall['point'])} {times(wall['wall_ratio'])} timm compiled "
                   f"(target {t['best_vs_timm_compiled']:.1f}x): " + ("met" if ok else f"NOT met; held back by {_held_back(wall)}"))
        dev = [r for r in dev_rows if r["batch_size"] == bs and r["device_ratio"] is not None]
        if not dev:
            out.append(f"best plugin at bs{bs}, device time: NOT met (not measured)")
            continue
        d = max(dev, key=lambda r: r["device_ratio"])
        ok = d["device_ratio"] >= t["best_vs_timm_compiled"]
        out.append(f"best plugin at bs{bs}, device time: {_label(d['point'])} {times(d['device_ratio'])} timm compiled: "
                   + ("met" if ok else f"NOT met ({d['point']['device_ms_per_step']:.2f} ms/step against timm's "
                                       f"{d['timm']['device_ms_per_step']:.2f})"))
    first = TARGET_BATCHES[0]
    by_family = {r["family"]: r for r in dev_rows if r["batch_size"] == first}
    for fam in sorted(set(by_family) | {family(p) for p in gpu}):
        r = by_family.get(fam)
        if r is None or r["device_ratio"] is None:
            out.append(f"{fam} >= {t['family_device_vs_timm_compiled']:.1f}x timm compiled on device time at bs{first}: "
                       "NOT met (not measured in this run)")
            continue
        ok = r["device_ratio"] >= t["family_device_vs_timm_compiled"]
        out.append(f"{fam} at bs{first}, device time: {_label(r['point'])} {times(r['device_ratio'])} timm compiled "
                   f"(target {t['family_device_vs_timm_compiled']:.1f}x): {'met' if ok else 'NOT met'}")
    mfu = [r for r in rows if r["point"].get("mfu") is not None]
    if not mfu:
        return out + [f"best point MFU >= {t['best_mfu']:.0%}: NOT met (not measured: no GPU peak)"]
    m = max(mfu, key=lambda r: r["point"]["mfu"])
    ok = m["point"]["mfu"] >= t["best_mfu"]
    timm_mfu = [r["timm"]["mfu"] for r in rows if r["timm"].get("mfu") is not None]
    out.append(f"best point MFU: {_label(m['point'])} bs{m['batch_size']} {m['point']['mfu']:.1%} (target {t['best_mfu']:.0%}"
               + (f"; timm compiled {max(timm_mfu):.1%}" if timm_mfu else "") + f"): {'met' if ok else 'NOT met'}")
    return out


def all_targets(points: list[dict]) -> list[str]:
    """Every target the report states: the earlier issues' (analysis.targets) and issue 29's."""
    return targets(points) + best_targets(points)
