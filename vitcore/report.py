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


def enrich(points: list[dict]) -> list[dict]:
    """Add derived fields: each point's throughput as a ratio to the plain-PyTorch reference measured
    in the same run at the same model and batch size (compiled when present, else eager; ratios from
    one run are what compares across machines, absolute images/s drift), and its memory lower bound."""
    refs = {}
    for p in points:
        if p.get("family") == "reference" and p.get("status") == "ok":
            k = (p["model"], p["batch_size"])
            if p["plugin"] == "reference_compiled" or k not in refs:
                refs[k] = p
    out = []
    for p in points:
        ref = refs.get((p.get("model"), p.get("batch_size")))
        if ref and p.get("images_per_s"):
            p = p | {"ratio_to_reference": p["images_per_s"] / ref["images_per_s"], "reference": ref["plugin"]}
        if "batch_size" in p and p.get("mem_lower_bound_gib") is None:
            from vitcore.memory import for_point

            p = p | {"mem_lower_bound_gib": for_point(p)}
        out.append(p)
    return out


def _fmt(v, spec=".1f", missing="-"):
    return missing if v is None else format(v, spec)


def performance_table(points: list[dict]) -> str:
    perf = enrich(perf_points(points))
    sizes = sorted({p["batch_size"] for p in perf})
    by = {}
    for p in perf:
        by.setdefault((p["plugin"], p["precision"]), {})[p["batch_size"]] = p
    head = ["plugin", "precision"] + [f"bs{b} img/s (spread)" for b in sizes] + \
           [f"bs{b} peak alloc / reserved / lower bound GiB" for b in sizes] + [f"bs{sizes[-1]} MFU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (plugin, prec), row in sorted(by.items()):
        cells = [plugin, prec]
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('images_per_s'))} ({_fmt(p.get('spread'), '.0%')})" if p else "not run")
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('peak_mem_allocated_gib'), '.2f')} / {_fmt(p.get('peak_mem_reserved_gib'), '.2f')}"
                         f" / {_fmt(p.get('mem_lower_bound_gib'), '.2f')}" if p else "not run")
        cells.append(_fmt(row.get(sizes[-1], {}).get("mfu"), ".1%"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def correctness_table(points: list[dict]) -> str:
    by = {}
    for p in points:
        if p.get("test") in ("parity", "checkpoint", "convergence"):
            by.setdefault((p["plugin"], p["precision"]), {})[p["test"]] = p
    head = ["plugin", "precision", "loss ‖Δ‖/‖ref‖ vs torch_ddp", "logits ‖Δ‖/‖ref‖", "parity",
            "checkpoint resume max Δ loss", "held-out accuracy (vit-tiny, 10 epochs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (plugin, prec), row in sorted(by.items()):
        par, ck, cv = row.get("parity", {}), row.get("checkpoint", {}), row.get("convergence", {})
        acc = cv.get("epochs", [{}])[-1].get("eval_accuracy") if cv else None
        lines.append("| " + " | ".join([
            plugin, prec, _fmt(par.get("loss_norm_rel"), ".2g"), _fmt(par.get("logits_norm_rel"), ".2g"),
            ("pass" if par.get("ok") else "FAIL") if par else "-",
            (f"{_fmt(ck.get('max_abs'), '.2g')} ({'pass' if ck.get('ok') else 'FAIL'})") if ck else "-",
            _fmt(acc, ".3f")]) + " |")
    return "\n".join(lines)


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
    for p in perf_points(points):
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


CSV_FIELDS = ("plugin", "family", "precision", "profile", "model", "world_size", "batch_size", "status",
              "images_per_s", "ratio_to_reference", "reference", "spread", "step_time_s", "peak_mem_allocated_gib", "peak_mem_reserved_gib",
              "mem_lower_bound_gib",
              "mfu", "repeats", "steps", "warmup", "device", "torch", "cuda", "colossalai",
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
    charts = [
        ("Throughput per GPU", chart_vs_batch(points, "images_per_s", "images / s per GPU",
                                              "throughput vs batch size", baseline)),
        ("Peak memory per GPU (allocated)", chart_vs_batch(points, "peak_mem_allocated_gib", "GiB",
                                                           "peak allocated memory vs batch size", baseline)),
        ("Peak memory per GPU (reserved)", chart_vs_batch(points, "peak_mem_reserved_gib", "GiB",
                                                          "peak reserved memory vs batch size", baseline)),
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
    cols = ("plugin", "precision", "profile", "model", "world_size", "batch_size", "status", "images_per_s",
            "ratio_to_reference", "spread", "peak_mem_allocated_gib", "peak_mem_reserved_gib", "mem_lower_bound_gib", "mfu")
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
<h2>Skipped</h2><ul id="skipped">{skipped_html}</ul>
</body></html>"""


def _cell(v, col):
    if isinstance(v, float):
        if col == "ratio_to_reference":
            return f"{v:.2f}x"
        return f"{v:.1%}" if col in ("spread", "mfu") else f"{v:.3f}" if "gib" in col else f"{v:.1f}"
    return v


def _pkey(p) -> tuple:
    from vitcore.results import point_key

    return point_key(p)


def write_all(out_dir, points, *, skipped=(), history=None, verdicts=None, baseline=None) -> Path:
    """report.html, points.json and points.csv of the same points, each written atomically."""
    from vitcore.results import write_atomic, write_json

    out = Path(out_dir)
    write_json(out / "points.json", points)
    write_atomic(out / "points.csv", to_csv(points))
    write_atomic(out / "report.html", html_report(points, skipped=skipped, history=history,
                                                  verdicts=verdicts, baseline=baseline))
    return out / "report.html"
