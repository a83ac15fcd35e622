"""Derived fields and tables from measured points: ratios to the reference, memory bounds, the
fast/study comparison, ablation deltas, harness overhead, scaling and the performance targets.

Rows are plain dicts; vitcore.reporting.report renders them. Nothing here measures or writes.
"""

from __future__ import annotations

from vitcore.reporting.memory import for_point
from vitcore.spec import plugins
from vitcore.spec.config import PROFILES


def family(p: dict) -> str:
    """A point's plugin family; points written before the field existed get it from the registry
    (else their plugin's name: a plugin this version no longer has is a family of its own)."""
    spec = plugins.REGISTRY.get(p["plugin"])
    return p.get("family") or (spec.family if spec else p["plugin"])

REFERENCES = ("reference_compiled", "reference_eager")  # preference order for ratio_to_reference

# The performance issue's targets, in one place (analysis.targets states each against measurements).
TARGETS = {
    "fastest_vs_compiled_reference": 1.15,  # best plugin point / compiled reference, same batch size
    "fastest_mfu": 0.45,
    "fast_over_study": 1.5,  # a plugin's fast profile over its study profile at one batch size
    "gemini_mem_vs_ddp": 0.5,  # Gemini's peak memory over torch_ddp's at the same precision
    "harness_overhead": 0.02,  # the suite's path against a bare hand-written loop
    # issue 29 (vitcore.reporting.best), against timm compiled measured in the same run:
    "best_vs_timm_compiled": 1.0,  # the best plugin point, wall images/s and device time, at bs128 and bs512
    "family_device_vs_timm_compiled": 0.8,  # every family's best point on device time at bs128
    "best_mfu": 0.40,
}


def references(points: list[dict]) -> list[dict]:
    """The finished plain-PyTorch points without a variant (family "reference": the reference
    loops, timm's and the bare twins; older points without a family by their REFERENCES name):
    what a plugin's numbers are set against (ratio_to_reference, the host-time table)."""
    return [p for p in points if p.get("plugin") and p.get("status") == "ok" and not p.get("variant")
            and (p["plugin"] in REFERENCES or family(p) == "reference")]


def perf_points(points: list[dict]) -> list[dict]:
    """Throughput/memory points (GPU-tier files also hold parity, checkpoint and convergence rows)."""
    return [p for p in points if p.get("test", "performance") == "performance" and "batch_size" in p]


def matrix_points(points: list[dict]) -> list[dict]:
    """The plugin x batch-size matrix: performance points that are not ablation variants."""
    return [p for p in perf_points(points) if not p.get("variant")]


def enrich(points: list[dict]) -> list[dict]:
    """Add derived fields: each point's throughput as a ratio to the plain-PyTorch references
    measured in the same run at the same model and batch size (ratio_to_reference: compiled when
    present, else eager; ratios from one run are what compares across machines, absolute images/s
    drift), and its memory lower bound."""
    refs = {(p["plugin"], p["model"], p["batch_size"]): p for p in references(points) if p["plugin"] in REFERENCES}
    out = []
    for p in points:
        if p.get("images_per_s"):
            for name in reversed(REFERENCES):  # compiled last, so it wins ratio_to_reference
                ref = refs.get((name, p.get("model"), p.get("batch_size")))
                if ref:
                    ratio = p["images_per_s"] / ref["images_per_s"]
                    p = p | {f"ratio_to_{name}": ratio, "ratio_to_reference": ratio, "reference": name}
        if "batch_size" in p and p.get("mem_lower_bound_gib") is None:
            p = p | {"mem_lower_bound_gib": for_point(p)}
        out.append(p)
    return out


def ok_points(points):
    return [p for p in enrich(perf_points(points)) if p.get("status") == "ok"]


def profile_rows(points: list[dict], batch_size: int = 128) -> dict[str, dict[str, dict]]:
    """{plugin: {"fast": point, "study": point}} at one batch size (matrix points only)."""
    by: dict[str, dict[str, dict]] = {}
    for p in ok_points(points):
        if (not p.get("variant") and p["batch_size"] == batch_size and family(p) != "reference"
                and p.get("profile") in ("fast", "study")):
            by.setdefault(p["plugin"], {})[p["profile"]] = p
    return by


def ablation_rows(points: list[dict]) -> list[dict]:
    """Each ablation variant against its base (same plugin, profile, model, batch size, precision
    of the base): delta = variant / base - 1 in images/s and in peak allocated memory."""
    base = {(p["plugin"], p["profile"], p["model"], p["batch_size"], p["precision"]): p
            for p in ok_points(points) if not p.get("variant")}
    rows = []
    for p in perf_points(points):
        if not p.get("variant"):
            continue
        b = base.get((p["plugin"], p["profile"], p["model"], p["batch_size"], p.get("base_precision") or p["precision"]))
        row = {"plugin": p["plugin"], "precision": b["precision"] if b else p.get("base_precision"),
               "profile": p["profile"], "batch_size": p["batch_size"], "variant": p["variant"],
               "status": p["status"], "error": p.get("error"),
               "base_images_per_s": b and b["images_per_s"], "images_per_s": p.get("images_per_s"),
               "base_mem_gib": b and b.get("peak_mem_allocated_gib"), "mem_gib": p.get("peak_mem_allocated_gib")}
        if b and p.get("images_per_s"):
            row["delta"] = p["images_per_s"] / b["images_per_s"] - 1
        if b and p.get("peak_mem_allocated_gib") and b.get("peak_mem_allocated_gib"):
            row["mem_delta"] = p["peak_mem_allocated_gib"] / b["peak_mem_allocated_gib"] - 1
        rows.append(row)
    return sorted(rows, key=lambda r: (r["plugin"], r["batch_size"], r["variant"]))


def option(p: dict, name: str):
    """A profile option of a point: recorded on the point, else its ablation variant, else the
    value its profile had when this code was written (older points did not record options)."""
    if p.get(name) is not None:
        return p[name]
    key, _, value = (p.get("variant") or "").partition("=")
    if key == name:
        return value == "True"
    return PROFILES.get(p.get("profile"), {}).get(name)


def harness_rows(points: list[dict]) -> list[dict]:
    """The suite's path (Booster, scheduler, train_step) against its bare hand-written twin with
    the same precision and optimizer (fused or not), measured in the same run."""
    ok = ok_points(points)
    rows = []
    for bare in ok:
        if not bare.get("mirrors"):
            continue
        twins = [p for p in ok if p["plugin"] == bare["mirrors"] and p.get("profile") == "fast"
                 and p["model"] == bare["model"] and p["batch_size"] == bare["batch_size"]
                 and p["precision"] == bare["precision"]
                 and bool(option(p, "fused_optimizer")) == bool(bare.get("fused_optimizer"))
                 and p.get("variant", "") in ("", "fused_optimizer=False", "fused_optimizer=True")]
        for h in twins:
            rows.append({"plugin": bare["mirrors"], "precision": bare["precision"], "batch_size": bare["batch_size"],
                         "fused_optimizer": bool(bare.get("fused_optimizer")),
                         "bare_images_per_s": bare["images_per_s"], "harness_images_per_s": h["images_per_s"],
                         "overhead": bare["images_per_s"] / h["images_per_s"] - 1})
    return rows


def targets(points: list[dict], batch_size: int = 128) -> list[str]:
    """The performance issue's targets (TARGETS), each stated with the measured numbers."""
    ok = [p for p in ok_points(points) if not p.get("variant")]
    t = TARGETS
    out = []
    plugins_ = [p for p in ok if family(p) != "reference" and p.get("ratio_to_reference_compiled")]
    if plugins_:
        best = max(plugins_, key=lambda p: p["images_per_s"])
        out.append(f"fastest plugin point: {best['plugin']} {best['precision']} {best['profile']} bs{best['batch_size']} "
                   f"{best['images_per_s']:.0f} img/s = {best['ratio_to_reference_compiled']:.2f}x the compiled "
                   f"reference (target {t['fastest_vs_compiled_reference']:.2f}x), MFU "
                   f"{format(best['mfu'], '.1%') if best.get('mfu') is not None else 'not measured (no GPU peak)'} "
                   f"(target {t['fastest_mfu']:.0%})")
    at = {(p["plugin"], p["profile"]): p for p in ok if p["batch_size"] == batch_size}
    for (plugin, prof), p in sorted(at.items()):
        st = at.get((plugin, "study"))
        if prof == "fast" and st:
            r = p["images_per_s"] / st["images_per_s"]
            out.append(f"{plugin}: fast/study at bs{batch_size} = {r:.2f}x (target {t['fast_over_study']}x): "
                       f"{'met' if r >= t['fast_over_study'] else 'NOT met'}")
    for prof in ("fast", "study"):
        for p in ok:
            if family(p) == "gemini" and p["profile"] == prof:
                ddp = next((q for q in ok if family(q) in ("torch_ddp", "torch_ddp_fp16") and q["profile"] == prof
                            and q["precision"] == p["precision"] and q["batch_size"] == p["batch_size"]), None)
                if ddp and p.get("peak_mem_allocated_gib") and ddp.get("peak_mem_allocated_gib"):
                    r = p["peak_mem_allocated_gib"] / ddp["peak_mem_allocated_gib"]
                    limit = t["gemini_mem_vs_ddp"]
                    out.append(f"{p['plugin']} {p['precision']} {prof} bs{p['batch_size']}: peak memory "
                               f"{r:.2f}x {ddp['plugin']}'s (target <= {limit}): {'met' if r <= limit else 'NOT met'}")
    for r in harness_rows(points):
        out.append(f"harness overhead {r['plugin']} bs{r['batch_size']}: {r['overhead']:+.1%} "
                   f"(target < {t['harness_overhead']:.0%})")
    return out


def correctness_rows(points: list[dict]) -> dict[tuple, dict[str, dict]]:
    """{(plugin, precision): {"parity"|"checkpoint"|"convergence": row}} of the GPU tier's results."""
    by: dict[tuple, dict[str, dict]] = {}
    for p in points:
        if p.get("test") in ("parity", "checkpoint", "convergence"):
            by.setdefault((p["plugin"], p["precision"]), {})[p["test"]] = p
    return by


def scaling_rows(points: list[dict]) -> list[dict]:
    """Per-GPU throughput and memory against world size, with scaling efficiency against the same
    family, precision, profile, model and batch size on one GPU (when that was measured)."""
    ok = [p for p in perf_points(points) if p.get("status") == "ok" and family(p) != "reference"]
    single = {(family(p), p["precision"], p["profile"], p["model"], p["batch_size"]): p
              for p in ok if p.get("world_size", 1) == 1}
    rows = []
    for p in ok:
        if p.get("world_size", 1) == 1:
            continue
        one = single.get((family(p), p["precision"], p["profile"], p["model"], p["batch_size"]))
        rows.append({"plugin": p["plugin"], "precision": p["precision"], "batch_size": p["batch_size"],
                     "world_size": p["world_size"], "images_per_s_per_gpu": p["images_per_s"],
                     "efficiency": p["images_per_s"] / one["images_per_s"] if one else None,
                     "peak_mem_allocated_gib": p.get("peak_mem_allocated_gib"),
                     "one_gpu_peak_mem_allocated_gib": one.get("peak_mem_allocated_gib") if one else None})
    return rows


# --- what a reader needs first --------------------------------------------------------------------
# A CPU run's derived tables use only points whose windows agree within this spread ((max - min) /
# median of the windows' images/s); on a loaded 2-core machine spreads reach 2,000%, and a ratio of
# two such numbers is noise. The rest are listed as too noisy.
CPU_SPREAD_LIMIT = 0.10
VERDICT_OUTCOMES = ("pass", "regressed", "improved", "inconclusive", "no budget")


def is_cpu_run(points: list[dict]) -> bool:
    """No measured point names a GPU: a CPU smoke test."""
    measured = [p for p in perf_points(points) if p.get("status") == "ok"] or perf_points(points)
    return bool(measured) and not any(p.get("gpu_name") for p in measured)


def split_noisy(points: list[dict], limit: float = CPU_SPREAD_LIMIT) -> tuple[list[dict], list[dict]]:
    """(points kept for derived tables, finished performance points whose spread is at or over
    `limit`, or unknown). Rows that are not throughput points (parity, failures) are kept."""
    kept, noisy = [], []
    for p in points:
        timed = bool(perf_points([p])) and p.get("status") == "ok"
        (noisy if timed and (p.get("spread") is None or p["spread"] >= limit) else kept).append(p)
    return kept, noisy


def verdict_outcome(cell: str | None) -> str:
    """One word for a point's report cell (budgets.verdict_cell): its worst metric's outcome; a
    point that did not finish counts as regressed."""
    if not cell or cell == "no budget":
        return "no budget"
    for outcome in ("regressed", "inconclusive", "improved", "pass"):
        if outcome in cell:
            return outcome
    return "regressed"  # "status oom"/"status error": budgets.judge's verdict on an unfinished point


def _best(points, metric, pick):
    have = [p for p in points if p.get(metric) is not None]
    return pick(have, key=lambda p: p[metric]) if have else None


def summary(points: list[dict], verdicts: dict, key) -> dict:
    """The report's head: per batch size the fastest and the leanest plugin point (references and
    bare loops aside; on a CPU only points under CPU_SPREAD_LIMIT), the verdict counts, and each
    failure (a point that did not finish, or a regressed metric) as one line."""
    cpu = is_cpu_run(points)
    pool = points
    if cpu:  # ratios afresh from quiet points only: a noisy reference gives none
        pool = [{k: v for k, v in p.items() if not k.startswith("ratio_to_") and k != "reference"}
                for p in split_noisy(points)[0]]
    ok = [p for p in ok_points(pool) if not p.get("variant") and family(p) != "reference"]
    rows = []
    for bs in sorted({p["batch_size"] for p in matrix_points(points)}):
        at = [p for p in ok if p["batch_size"] == bs]
        rows.append({"batch_size": bs, "fastest": _best(at, "images_per_s", max),
                     "leanest": _best(at, "peak_mem_allocated_gib", min)})
    counts = dict.fromkeys(VERDICT_OUTCOMES, 0)
    failures = []
    for p in perf_points(points):
        cell = verdicts.get(key(p))
        # a point that did not finish is regressed, budget or not (budgets.judge's rule for one that has)
        outcome = verdict_outcome(cell) if p.get("status") == "ok" else "regressed"
        counts[outcome] += 1
        who = f"{p['plugin']} {p['precision']} {p.get('profile', '')} bs{p['batch_size']}"
        if p.get("status") != "ok":
            error = (p.get("error") or "").strip().splitlines()
            failures.append(f"{who}: {p.get('status')}" + (f": {error[0]}" if error else ""))
        elif outcome == "regressed":
            worse = [part for part in cell.split("; ") if "regressed" in part or part.startswith("status")]
            failures.append(f"{who}: {'; '.join(worse or [cell])}")
    return {"cpu": cpu, "rows": rows, "counts": counts, "failures": failures}
