"""Reports from saved results: Markdown tables (README), self-contained HTML with charts, CSV."""

from __future__ import annotations

import json
from pathlib import Path

from vitcore.results import read_points


def load(path) -> list[dict]:
    """Points from a points.jsonl, a gpu-results.json ({"results": [...]}) or a JSON list."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_points(path)
    data = json.loads(path.read_text())
    return data["results"] if isinstance(data, dict) else data


def perf_points(points: list[dict]) -> list[dict]:
    """Throughput/memory points (GPU-tier files also hold parity, checkpoint and convergence rows)."""
    return [p for p in points if p.get("test", "performance") == "performance" and "batch_size" in p]


def matrix_points(points: list[dict]) -> list[dict]:
    """The plugin x batch-size matrix: performance points that are not ablation variants."""
    return [p for p in perf_points(points) if not p.get("variant")]


REFERENCES = ("reference_compiled", "reference_eager")  # preference order for ratio_to_reference


def enrich(points: list[dict]) -> list[dict]:
    """Add derived fields: each point's throughput as a ratio to the plain-PyTorch references
    measured in the same run at the same model and batch size (ratio_to_reference: compiled when
    present, else eager; ratios from one run are what compares across machines, absolute images/s
    drift), and its memory lower bound."""
    refs = {}
    for p in points:
        if p.get("plugin") in REFERENCES and p.get("status") == "ok" and not p.get("variant"):
            refs[(p["plugin"], p["model"], p["batch_size"])] = p
    out = []
    for p in points:
        if p.get("images_per_s"):
            for name in reversed(REFERENCES):  # compiled last, so it wins ratio_to_reference
                ref = refs.get((name, p.get("model"), p.get("batch_size")))
                if ref:
                    ratio = p["images_per_s"] / ref["images_per_s"]
                    p = p | {f"ratio_to_{name}": ratio, "ratio_to_reference": ratio, "reference": name}
        if "batch_size" in p and p.get("mem_lower_bound_gib") is None:
            from vitcore.memory import for_point

            p = p | {"mem_lower_bound_gib": for_point(p)}
        out.append(p)
    return out


def _fmt(v, spec=".1f", missing="-"):
    return missing if v is None else format(v, spec)


def _times(v) -> str:
    """A ratio as "1.23x", or "-"."""
    return f"{v:.2f}x" if v else "-"


def _md_table(head: list[str], rows) -> list[str]:
    """Markdown table lines: header, rule, one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
           ["| " + " | ".join(map(str, cells)) + " |" for cells in rows]


def performance_table(points: list[dict], profile: str | None = None) -> str:
    """img/s (spread) and peak memory per plugin and batch size; one profile, or every one."""
    perf = enrich(matrix_points(points))
    if profile:
        perf = [p for p in perf if p.get("profile") in (profile, "reference")]
    if not perf:
        return "(no points)"
    sizes = sorted({p["batch_size"] for p in perf})
    by = {}
    for p in perf:
        by.setdefault((p["plugin"], p["precision"], p.get("profile", "")), {})[p["batch_size"]] = p
    head = ["plugin", "precision", "profile"] + [f"bs{b} img/s (spread)" for b in sizes] + \
           [f"bs{b} peak alloc / reserved / lower bound GiB" for b in sizes] + \
           [f"bs{sizes[-1]} MFU", f"bs{sizes[-1]} vs compiled ref"]
    rows = []
    for (plugin, prec, prof), row in sorted(by.items(), key=lambda kv: (kv[0][2] != "reference", kv[0])):
        cells = [plugin, prec, prof]
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('images_per_s'))} ({_fmt(p.get('spread'), '.0%')})" if p else "not run")
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('peak_mem_allocated_gib'), '.2f')} / {_fmt(p.get('peak_mem_reserved_gib'), '.2f')}"
                         f" / {_fmt(p.get('mem_lower_bound_gib'), '.2f')}" if p else "not run")
        last = row.get(sizes[-1], {})
        rows.append(cells + [_fmt(last.get("mfu"), ".1%"), _times(last.get("ratio_to_reference_compiled"))])
    return "\n".join(_md_table(head, rows))


def _ok(points):
    return [p for p in enrich(perf_points(points)) if p.get("status") == "ok"]


def profiles_table(points: list[dict], batch_size: int = 128) -> str:
    """fast beside study per plugin entry at one batch size (issue target: fast >= 1.5x study)."""
    ok = [p for p in _ok(points) if not p.get("variant") and p["batch_size"] == batch_size
          and p.get("family") != "reference"]
    by = {}
    for p in ok:
        if p.get("profile") in ("fast", "study"):
            by.setdefault(p["plugin"], {})[p["profile"]] = p
    head = ["plugin", "study: precision, img/s", "fast: precision, img/s", "fast / study",
            "fast MFU", "fast vs compiled ref", "study peak alloc GiB", "fast peak alloc GiB"]
    rows = []
    for plugin, row in sorted(by.items()):
        st, fa = row.get("study", {}), row.get("fast", {})
        ratio = fa["images_per_s"] / st["images_per_s"] if st and fa else None
        rows.append([plugin, f"{st.get('precision', '-')}, {_fmt(st.get('images_per_s'))}",
                     f"{fa.get('precision', '-')}, {_fmt(fa.get('images_per_s'))}",
                     _times(ratio), _fmt(fa.get("mfu"), ".1%"), _times(fa.get("ratio_to_reference_compiled")),
                     _fmt(st.get("peak_mem_allocated_gib"), ".2f"), _fmt(fa.get("peak_mem_allocated_gib"), ".2f")])
    return "\n".join([f"Batch size {batch_size} per GPU.", ""] + _md_table(head, rows))


def ablation_rows(points: list[dict]) -> list[dict]:
    """Each ablation variant against its base (same plugin, profile, model, batch size, precision
    of the base): delta = variant / base - 1 in images/s and in peak allocated memory."""
    ok = _ok(points)
    base = {(p["plugin"], p["profile"], p["model"], p["batch_size"], p["precision"]): p
            for p in ok if not p.get("variant")}
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


def ablation_table(points: list[dict]) -> str:
    rows = ablation_rows(points)
    if not rows:
        return "(no ablation points)"
    head = ["plugin", "precision", "profile", "bs", "option flipped", "img/s with profile",
            "img/s flipped", "Δ img/s", "Δ peak alloc", "verdict for the profile"]
    cells = []
    for r in rows:
        d = r.get("delta")
        if r["status"] != "ok":
            verdict = f"{r['status']}: {(r.get('error') or '')[:120]}"
        elif d is None:
            verdict = "-"
        else:
            # Flipping an option away from the profile and losing speed means the profile's choice helps.
            verdict = "profile's setting helps" if d < -0.02 else "flip helps" if d > 0.02 else "within ±2%"
        cells.append([r["plugin"], r["precision"], r["profile"], r["batch_size"], r["variant"],
                      _fmt(r["base_images_per_s"]), _fmt(r["images_per_s"]), _fmt(d, "+.1%"),
                      _fmt(r.get("mem_delta"), "+.1%"), verdict])
    return "\n".join(_md_table(head, cells))


def option(p: dict, name: str):
    """A profile option of a point: recorded on the point, else its ablation variant, else the
    value its profile had when this code was written (older points did not record options)."""
    from vitcore.config import PROFILES

    if p.get(name) is not None:
        return p[name]
    key, _, value = (p.get("variant") or "").partition("=")
    if key == name:
        return value == "True"
    return PROFILES.get(p.get("profile"), {}).get(name)


def harness_rows(points: list[dict]) -> list[dict]:
    """The suite's path (Booster, scheduler, train_step) against its bare hand-written twin with
    the same precision and optimizer (fused or not), measured in the same run."""
    ok = _ok(points)
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


def harness_table(points: list[dict]) -> str:
    rows = harness_rows(points)
    if not rows:
        return "(no bare-loop points)"
    head = ["plugin", "precision", "fused Adam", "bs", "bare loop img/s", "suite img/s", "harness overhead"]
    return "\n".join(_md_table(head, ([r["plugin"], r["precision"], r["fused_optimizer"], r["batch_size"],
                                        _fmt(r["bare_images_per_s"]), _fmt(r["harness_images_per_s"]),
                                        _fmt(r["overhead"], "+.1%")]
                                       for r in sorted(rows, key=lambda r: (r["plugin"], r["batch_size"])))))


def targets(points: list[dict], batch_size: int = 128) -> list[str]:
    """The performance issue's targets, each stated with the measured numbers."""
    ok = [p for p in _ok(points) if not p.get("variant")]
    out = []
    plugins_ = [p for p in ok if p.get("family") != "reference" and p.get("ratio_to_reference_compiled")]
    if plugins_:
        best = max(plugins_, key=lambda p: p["images_per_s"])
        out.append(f"fastest plugin point: {best['plugin']} {best['precision']} {best['profile']} bs{best['batch_size']} "
                   f"{best['images_per_s']:.0f} img/s = {best['ratio_to_reference_compiled']:.2f}x the compiled "
                   f"reference (target 1.15x), MFU {best['mfu']:.1%} (target 45%)")
    at = {(p["plugin"], p["profile"]): p for p in ok if p["batch_size"] == batch_size}
    for (plugin, prof), p in sorted(at.items()):
        st = at.get((plugin, "study"))
        if prof == "fast" and st:
            r = p["images_per_s"] / st["images_per_s"]
            out.append(f"{plugin}: fast/study at bs{batch_size} = {r:.2f}x (target 1.5x): "
                       f"{'met' if r >= 1.5 else 'NOT met'}")
    for prof in ("fast", "study"):
        for p in ok:
            if p["family"] == "gemini" and p["profile"] == prof:
                ddp = next((q for q in ok if q["family"] in ("torch_ddp", "torch_ddp_fp16") and q["profile"] == prof
                            and q["precision"] == p["precision"] and q["batch_size"] == p["batch_size"]), None)
                if ddp and p.get("peak_mem_allocated_gib") and ddp.get("peak_mem_allocated_gib"):
                    r = p["peak_mem_allocated_gib"] / ddp["peak_mem_allocated_gib"]
                    out.append(f"{p['plugin']} {p['precision']} {prof} bs{p['batch_size']}: peak memory "
                               f"{r:.2f}x {ddp['plugin']}'s (target <= 0.5): {'met' if r <= 0.5 else 'NOT met'}")
    for r in harness_rows(points):
        out.append(f"harness overhead {r['plugin']} bs{r['batch_size']}: {r['overhead']:+.1%} (target < 2%)")
    return out


def correctness_table(points: list[dict]) -> str:
    by = {}
    for p in points:
        if p.get("test") in ("parity", "checkpoint", "convergence"):
            by.setdefault((p["plugin"], p["precision"]), {})[p["test"]] = p
    head = ["plugin", "precision", "loss ‖Δ‖/‖ref‖ vs torch_ddp", "logits ‖Δ‖/‖ref‖", "parity",
            "checkpoint resume max Δ loss", "held-out accuracy (vit-tiny, 10 epochs)"]
    rows = []
    for (plugin, prec), row in sorted(by.items()):
        par, ck, cv = row.get("parity", {}), row.get("checkpoint", {}), row.get("convergence", {})
        acc = cv.get("epochs", [{}])[-1].get("eval_accuracy") if cv else None
        rows.append([plugin, prec, _fmt(par.get("loss_norm_rel"), ".2g"), _fmt(par.get("logits_norm_rel"), ".2g"),
                     ("pass" if par.get("ok") else "FAIL") if par else "-",
                     (f"{_fmt(ck.get('max_abs'), '.2g')} ({'pass' if ck.get('ok') else 'FAIL'})") if ck else "-",
                     _fmt(acc, ".3f")])
    return "\n".join(_md_table(head, rows))


def budget_table(points: list[dict], folder) -> str:
    """The performance tests' verdicts, recomputed from their result rows and a budget folder by
    the tests' own rule (budgets.check): one row per point."""
    from vitcore import budgets

    head = ["plugin", "precision", "bs", "img/s (spread)", "budget img/s", "throughput", "steady peak alloc / reserved GiB",
            "budget GiB", "memory"]
    rows = []
    for p in sorted((p for p in points if p.get("test") == "performance"), key=lambda p: (p["plugin"], p["batch_size"])):
        try:
            entry, mem = budgets.check(folder, p, "memory")
        except budgets.NoBudget as e:
            rows.append([p["plugin"], p["precision"], p["batch_size"], "", "-", f"skip: {e}", "", "-", "skip"])
            continue
        try:
            _, tput = budgets.check(folder, p, "throughput")
            t_verdict = f"FAIL {tput[0].delta:+.1%}" if tput else "pass"
            t_budget = _fmt(entry["images_per_s"], ".0f")
        except budgets.NoBudget:
            t_verdict, t_budget = f"skip (no baseline: spread {entry['spread']:.0%} when recorded)", "-"
        kind = budgets.memory_metrics(p, entry)
        rows.append([p["plugin"], p["precision"], p["batch_size"],
                     f"{_fmt(p.get('images_per_s'), '.0f')} ({_fmt(p.get('spread'), '.0%')})", t_budget, t_verdict,
                     f"{_fmt(p.get(kind[0]), '.2f')} / {_fmt(p.get(kind[1]), '.2f')}",
                     f"{_fmt(entry.get(kind[0]), '.2f')} / {_fmt(entry.get(kind[1]), '.2f')}",
                     "; ".join(f"FAIL {v.metric} {v.delta:+.1%}" for v in mem) or "pass"])
    return "\n".join(_md_table(head, rows))


def scaling_rows(points: list[dict]) -> list[dict]:
    """Per-GPU throughput and memory against world size, with scaling efficiency against the same
    family, precision, profile, model and batch size on one GPU (when that was measured)."""
    ok = [p for p in perf_points(points) if p.get("status") == "ok" and p.get("family") != "reference"]
    single = {(p["family"], p["precision"], p["profile"], p["model"], p["batch_size"]): p
              for p in ok if p.get("world_size", 1) == 1}
    rows = []
    for p in ok:
        if p.get("world_size", 1) == 1:
            continue
        one = single.get((p["family"], p["precision"], p["profile"], p["model"], p["batch_size"]))
        rows.append({"plugin": p["plugin"], "precision": p["precision"], "batch_size": p["batch_size"],
                     "world_size": p["world_size"], "images_per_s_per_gpu": p["images_per_s"],
                     "efficiency": p["images_per_s"] / one["images_per_s"] if one else None,
                     "peak_mem_allocated_gib": p.get("peak_mem_allocated_gib"),
                     "one_gpu_peak_mem_allocated_gib": one.get("peak_mem_allocated_gib") if one else None})
    return rows


# --- HTML ---------------------------------------------------------------------------------------
def _png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _series(points, metric):
    out = {}
    for p in matrix_points(points):
        if p.get("status") == "ok" and p.get(metric) is not None:
            out.setdefault(f"{p['plugin']} {p['precision']} {p.get('profile', '')}".strip(), []).append(
                (p["batch_size"], p[metric]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def chart_vs_batch(points, metric, ylabel, title, baseline=None) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(points, metric)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.cm.tab20.colors
    base_series = _series(baseline, metric) if baseline else {}
    for i, (name, xy) in enumerate(series.items()):
        line, = ax.plot(*zip(*xy, strict=True), marker="os^Dv"[i % 5], color=colors[i % 20], label=name)
        old = base_series.get(name)
        if old:
            ax.plot(*zip(*old, strict=True), marker="x", ls="--", color=line.get_color(), alpha=0.6,
                    label=f"{name} (baseline)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size per GPU")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def chart_finetune(history: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e for e in history.get("epochs", []) if e.get("epoch")]
    if not epochs:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = [e["epoch"] for e in epochs]
    a.plot(x, [e["train_loss"] for e in epochs], marker="o", label="train loss")
    a.plot(x, [e["eval_loss"] for e in epochs], marker="o", label="eval loss")
    a.set_xlabel("epoch")
    a.legend()
    a.set_title("loss")
    b.plot(x, [e["eval_accuracy"] for e in epochs], marker="o", color="tab:green")
    b.set_ylim(0, 1.02)
    b.set_xlabel("epoch")
    b.set_title("held-out accuracy")
    fig.suptitle(f"fine-tuning: {history['plugin']} {history['precision']}, {history['model']}, "
                 f"{history['dataset']}, weights {history['weights']}", fontsize=8)
    return _png(fig)


CSV_FIELDS = ("plugin", "family", "precision", "profile", "variant", "model", "world_size", "batch_size", "status",
              "images_per_s", "ratio_to_reference", "reference", "ratio_to_reference_eager",
              "ratio_to_reference_compiled", "spread", "step_time_s", "peak_mem_allocated_gib", "peak_mem_reserved_gib",
              "mem_lower_bound_gib",
              "mfu", "gpu_busy", "repeats", "steps", "warmup", "device", "torch", "cuda", "colossalai",
              "transformers", "git_sha", "date", "dataset", "weights", "error")


def to_csv(points) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for p in points:
        w.writerow({k: p.get(k) for k in CSV_FIELDS})
    return buf.getvalue()


def _esc(v) -> str:
    import html

    return html.escape("" if v is None else str(v))


def html_report(points, *, skipped=(), history=None, verdicts=None, baseline=None,
                title="vitcore benchmark") -> str:
    """One self-contained page: charts as embedded PNG, every point in a table with its verdict."""
    verdicts = verdicts or {}
    profiles = sorted({p.get("profile") for p in matrix_points(points)} - {"reference", None}) or [None]
    charts = []
    for prof in profiles:
        sub = [p for p in points if prof is None or p.get("profile") in (prof, "reference")]
        tag = f" ({prof} profile)" if prof and len(profiles) > 1 else ""
        charts += [
            (f"Throughput per GPU{tag}", chart_vs_batch(sub, "images_per_s", "images / s per GPU",
                                                        f"throughput vs batch size{tag}", baseline)),
            (f"Peak memory per GPU (allocated){tag}", chart_vs_batch(sub, "peak_mem_allocated_gib", "GiB",
                                                                     f"peak allocated memory vs batch size{tag}", baseline)),
            (f"Peak memory per GPU (reserved){tag}", chart_vs_batch(sub, "peak_mem_reserved_gib", "GiB",
                                                                    f"peak reserved memory vs batch size{tag}", baseline)),
        ]
    if history:
        charts.append(("Fine-tuning", chart_finetune(history)))
    env = next((p for p in points if p.get("torch")), {})
    env_rows = "".join(f"<tr><th>{k}</th><td>{_esc(env.get(k))}</td></tr>" for k in
                       ("device", "gpu_name", "gpu_count", "driver", "torch", "cuda", "colossalai",
                        "transformers", "python", "git_sha", "date", "dataset", "weights"))
    if history:
        env_rows += f"<tr><th>fine-tuning data</th><td>{_esc(history.get('dataset'))}</td></tr>"
        env_rows += f"<tr><th>fine-tuning weights</th><td>{_esc(history.get('weights'))}</td></tr>"
    cols = ("plugin", "precision", "profile", "variant", "model", "world_size", "batch_size", "status", "images_per_s",
            "ratio_to_reference", "spread", "peak_mem_allocated_gib", "peak_mem_reserved_gib", "mem_lower_bound_gib", "mfu", "gpu_busy")
    body = []
    for p in points:
        cells = "".join(f"<td>{_esc(_cell(p.get(c), c))}</td>" for c in cols)
        v = verdicts.get(_pkey(p), "no budget")
        body.append(f"<tr class='point'>{cells}<td>{_esc(v)}</td></tr>")
    scaling = scaling_rows(points)
    scale_cols = ("plugin", "precision", "batch_size", "world_size", "images_per_s_per_gpu", "efficiency",
                  "peak_mem_allocated_gib", "one_gpu_peak_mem_allocated_gib")
    scaling_html = "" if not scaling else (
        "<h2>Scaling (per GPU, efficiency against one GPU of the same family)</h2><table id='scaling'><tr>"
        + "".join(f"<th>{c}</th>" for c in scale_cols) + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{_esc(_cell(r[c], 'spread' if c == 'efficiency' else c))}</td>"
                                   for c in scale_cols) + "</tr>" for r in scaling) + "</table>")
    analysis = "".join(f"<h2>{_esc(name)}</h2>{_md_to_html(md)}" for name, md in (
        ("Fast profile beside the study profile", profiles_table(points)),
        ("Options, one at a time (ablation)", ablation_table(points)),
        ("Harness overhead over a bare hand-written loop", harness_table(points)))
        if not md.startswith("(no"))
    goals = targets(points)
    if goals:
        analysis += "<h2>Targets</h2><ul id='targets'>" + "".join(f"<li>{_esc(g)}</li>" for g in goals) + "</ul>"
    skipped_html = "".join(f"<li>{_esc(s['plugin'])} {_esc(s.get('precision') or '')}: {_esc(s['reason'])}</li>"
                           for s in skipped) or "<li>none</li>"
    figs = "".join(f"<h2>{_esc(name)}</h2><img class='chart' alt='{_esc(name)}' src='{src}'>"
                   if src else f"<h2>{_esc(name)}</h2><p>no data: nothing measured it "
                               "(peak GPU memory is not measured on a CPU)</p>"
                   for name, src in charts)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}img.chart{{max-width:100%}}</style></head><body>
<h1>{_esc(title)}</h1>
<h2>Environment</h2><table>{env_rows}</table>
{figs}
<h2>Points ({len(points)})</h2>
<table id="points"><thead><tr>{''.join(f'<th>{c}</th>' for c in cols)}<th>verdict (delta)</th></tr></thead>
<tbody>{''.join(body)}</tbody></table>
{scaling_html}
{analysis}
<h2>Skipped</h2><ul id="skipped">{skipped_html}</ul>
</body></html>"""


def _md_to_html(md: str) -> str:
    """The Markdown tables above, as HTML (leading prose lines become paragraphs)."""
    rows, html = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line) <= set("|-: "):
                continue
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif line.strip():
            html.append(f"<p>{_esc(line)}</p>")
    if rows:
        html.append("<table class='analysis'><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in rows[0]) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                    + "</table>")
    return "".join(html)


def summary_markdown(points: list[dict]) -> str:
    """Every table of the report as Markdown (README and docs/performance.md paste from it)."""
    parts = [("Throughput and memory", performance_table(points)),
             ("Fast profile beside the study profile", profiles_table(points)),
             ("Options, one at a time", ablation_table(points)),
             ("Harness overhead", harness_table(points)),
             ("Targets", "\n".join(f"- {t}" for t in targets(points)) or "(none measured)")]
    return "\n\n".join(f"### {h}\n\n{b}" for h, b in parts) + "\n"


def _cell(v, col):
    if isinstance(v, float):
        if col == "ratio_to_reference":
            return f"{v:.2f}x"
        return f"{v:.1%}" if col in ("spread", "mfu", "gpu_busy") else f"{v:.3f}" if "gib" in col else f"{v:.1f}"
    return v


def _pkey(p) -> tuple:
    from vitcore.results import point_key

    return point_key(p)


def _write_chart_files(out: Path, points) -> None:
    """throughput.png and memory.png beside the report, for READMEs (the HTML embeds its own)."""
    import base64

    from vitcore.results import write_atomic_bytes

    for name, metric, unit, title in (("throughput.png", "images_per_s", "images / s per GPU", "throughput vs batch size"),
                                      ("memory.png", "peak_mem_allocated_gib", "GiB", "peak allocated memory vs batch size")):
        src = chart_vs_batch(points, metric, unit, title)
        if src:
            write_atomic_bytes(out / name, base64.b64decode(src.split(",", 1)[1]))


def write_all(out_dir, points, *, skipped=(), history=None, verdicts=None, baseline=None) -> Path:
    """report.html, points.json and points.csv of the same points, each written atomically."""
    from vitcore.results import write_atomic, write_json

    out = Path(out_dir)
    write_json(out / "points.json", points)
    write_atomic(out / "points.csv", to_csv(points))
    write_atomic(out / "summary.md", summary_markdown(points))
    _write_chart_files(out, points)
    write_atomic(out / "report.html", html_report(points, skipped=skipped, history=history,
                                                  verdicts=verdicts, baseline=baseline))
    return out / "report.html"
