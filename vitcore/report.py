"""Rendering only: Markdown tables (README), a self-contained HTML page with charts, CSV.

Columns, formats and the glossary come from the point schema (vitcore.points); derived numbers
from vitcore.analysis; verdicts from vitcore.budgets. Nothing here computes a result.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

from vitcore import analysis, budgets
from vitcore import points as schema
from vitcore.analysis import enrich, matrix_points
from vitcore.results import write_atomic, write_atomic_bytes, write_json


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


def profiles_table(points: list[dict], batch_size: int = 128) -> str:
    """fast beside study per plugin entry at one batch size (issue target: fast >= 1.5x study)."""
    head = ["plugin", "study: precision, img/s", "fast: precision, img/s", "fast / study",
            "fast MFU", "fast vs compiled ref", "study peak alloc GiB", "fast peak alloc GiB"]
    rows = []
    for plugin, row in sorted(analysis.profile_rows(points, batch_size).items()):
        st, fa = row.get("study", {}), row.get("fast", {})
        ratio = fa["images_per_s"] / st["images_per_s"] if st and fa else None
        rows.append([plugin, f"{st.get('precision', '-')}, {_fmt(st.get('images_per_s'))}",
                     f"{fa.get('precision', '-')}, {_fmt(fa.get('images_per_s'))}",
                     _times(ratio), _fmt(fa.get("mfu"), ".1%"), _times(fa.get("ratio_to_reference_compiled")),
                     _fmt(st.get("peak_mem_allocated_gib"), ".2f"), _fmt(fa.get("peak_mem_allocated_gib"), ".2f")])
    return "\n".join([f"Batch size {batch_size} per GPU.", ""] + _md_table(head, rows))


def ablation_table(points: list[dict]) -> str:
    rows = analysis.ablation_rows(points)
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


def harness_table(points: list[dict]) -> str:
    rows = analysis.harness_rows(points)
    if not rows:
        return "(no bare-loop points)"
    head = ["plugin", "precision", "fused Adam", "bs", "bare loop img/s", "suite img/s", "harness overhead"]
    return "\n".join(_md_table(head, ([r["plugin"], r["precision"], r["fused_optimizer"], r["batch_size"],
                                        _fmt(r["bare_images_per_s"]), _fmt(r["harness_images_per_s"]),
                                        _fmt(r["overhead"], "+.1%")]
                                       for r in sorted(rows, key=lambda r: (r["plugin"], r["batch_size"])))))


def correctness_table(points: list[dict]) -> str:
    by = analysis.correctness_rows(points)
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
    the tests' own rule (budgets.check): one row per point, one column per gate group."""
    groups = schema.gate_groups()
    head = ["plugin", "precision", "bs", "img/s (spread)", "device ms/step", "launches/step"] + groups
    rows = []
    for p in sorted((p for p in points if p.get("test") == "performance"), key=lambda p: (p["plugin"], p["batch_size"])):
        cells = []
        for g in groups:
            try:
                _, verdicts = budgets.check(folder, p, g)
                cells.append("; ".join(v.short().split(" ", 1)[1] for v in verdicts))
            except budgets.NoBudget as e:
                cells.append(f"skip: {e}")
        rows.append([p["plugin"], p["precision"], p["batch_size"],
                     f"{_fmt(p.get('images_per_s'), '.0f')} ({_fmt(p.get('spread'), '.0%')})",
                     _fmt(p.get("device_ms_per_step"), ".2f"), _fmt(p.get("launches_per_step"), ".0f")] + cells)
    return "\n".join(_md_table(head, rows))


# --- HTML ---------------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
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


def to_csv(points) -> str:
    """One row per point, the schema's CSV fields as columns (raw values, not formatted)."""
    fields = schema.csv_fields()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for p in points:
        w.writerow({k: p.get(k) for k in fields})
    return buf.getvalue()


def _esc(v) -> str:
    return html.escape("" if v is None else str(v))


ENV_ROWS = ("device", "gpu_name", "gpu_count", "driver", "torch", "cuda", "colossalai", "transformers", "python",
            "git_sha", "date", "dataset", "weights")
SCALING_COLS = {"plugin": "plugin", "precision": "precision", "batch_size": "batch_size", "world_size": "world_size",
                "images_per_s_per_gpu": "images_per_s", "efficiency": "spread",
                "peak_mem_allocated_gib": "peak_mem_allocated_gib",
                "one_gpu_peak_mem_allocated_gib": "peak_mem_allocated_gib"}  # column -> field whose format it takes


def _charts(points, history, baseline) -> list[tuple[str, str | None]]:
    """(title, PNG data URL or None) per chart: throughput and memory against batch size per profile."""
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
    return charts


def _env_html(points, history) -> str:
    env = next((p for p in points if p.get("torch")), {})
    rows = "".join(f"<tr><th>{k}</th><td>{_esc(env.get(k))}</td></tr>" for k in ENV_ROWS)
    if history:
        rows += f"<tr><th>fine-tuning data</th><td>{_esc(history.get('dataset'))}</td></tr>"
        rows += f"<tr><th>fine-tuning weights</th><td>{_esc(history.get('weights'))}</td></tr>"
    return rows


def _points_html(points, verdicts) -> str:
    cols = schema.table_fields()
    body = []
    for p in points:
        cells = "".join(f"<td>{_esc(f.format(p.get(f.name)))}</td>" for f in cols)
        v = verdicts.get(schema.key(p), "no budget")
        body.append(f"<tr class='point'>{cells}<td>{_esc(v)}</td></tr>")
    return (f"<h2>Points ({len(points)})</h2>\n<table id=\"points\"><thead><tr>"
            f"{''.join(f'<th>{f.title}</th>' for f in cols)}<th>verdicts (change)</th></tr></thead>\n"
            f"<tbody>{''.join(body)}</tbody></table>")


def _scaling_html(points) -> str:
    scaling = analysis.scaling_rows(points)
    if not scaling:
        return ""
    fmt = {c: schema.get(f) for c, f in SCALING_COLS.items()}
    return ("<h2>Scaling (per GPU, efficiency against one GPU of the same family)</h2><table id='scaling'><tr>"
            + "".join(f"<th>{c}</th>" for c in SCALING_COLS) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_esc(fmt[c].format(r[c]))}</td>" for c in SCALING_COLS) + "</tr>"
                      for r in scaling) + "</table>")


def _analysis_html(points) -> str:
    out = "".join(f"<h2>{_esc(name)}</h2>{_md_to_html(md)}" for name, md in (
        ("Fast profile beside the study profile", profiles_table(points)),
        ("Options, one at a time (ablation)", ablation_table(points)),
        ("Harness overhead over a bare hand-written loop", harness_table(points)))
        if not md.startswith("(no"))
    goals = analysis.targets(points)
    if goals:
        out += "<h2>Targets</h2><ul id='targets'>" + "".join(f"<li>{_esc(g)}</li>" for g in goals) + "</ul>"
    return out


def glossary_html() -> str:
    """Every point field with its unit and meaning, from the schema."""
    rows = "".join(f"<tr><th>{_esc(f.title)}</th><td>{_esc(f.unit)}</td><td>{_esc(f.description)}</td></tr>"
                   for f in schema.FIELDS)
    return f"<h2>Glossary</h2><table id='glossary'><tr><th>field</th><th>unit</th><th>meaning</th></tr>{rows}</table>"


def html_report(points, *, skipped=(), history=None, verdicts=None, baseline=None, notes=(),
                title="vitcore benchmark") -> str:
    """One self-contained page: charts as embedded PNG, every point in a table with its verdict."""
    skipped_html = "".join(f"<li>{_esc(s['plugin'])} {_esc(s.get('precision') or '')}: {_esc(s['reason'])}</li>"
                           for s in skipped) or "<li>none</li>"
    figs = "".join(f"<h2>{_esc(name)}</h2><img class='chart' alt='{_esc(name)}' src='{src}'>"
                   if src else f"<h2>{_esc(name)}</h2><p>no data: nothing measured it "
                               "(peak GPU memory is not measured on a CPU)</p>"
                   for name, src in _charts(points, history, baseline))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}img.chart{{max-width:100%}}</style></head><body>
<h1>{_esc(title)}</h1>
{"".join(f"<p class='note'>{_esc(n)}</p>" for n in notes)}
<h2>Environment</h2><table>{_env_html(points, history)}</table>
{figs}
{_points_html(points, verdicts or {})}
{_scaling_html(points)}
{_analysis_html(points)}
<h2>Skipped</h2><ul id="skipped">{skipped_html}</ul>
{glossary_html()}
</body></html>"""


def _md_to_html(md: str) -> str:
    """The Markdown tables above, as HTML (leading prose lines become paragraphs)."""
    rows, parts = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line) <= set("|-: "):
                continue
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif line.strip():
            parts.append(f"<p>{_esc(line)}</p>")
    if rows:
        parts.append("<table class='analysis'><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in rows[0]) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                     + "</table>")
    return "".join(parts)


def summary_markdown(points: list[dict]) -> str:
    """Every table of the report as Markdown (README and docs/performance.md paste from it)."""
    parts = [("Throughput and memory", performance_table(points)),
             ("Fast profile beside the study profile", profiles_table(points)),
             ("Options, one at a time", ablation_table(points)),
             ("Harness overhead", harness_table(points)),
             ("Targets", "\n".join(f"- {t}" for t in analysis.targets(points)) or "(none measured)")]
    return "\n\n".join(f"### {h}\n\n{b}" for h, b in parts) + "\n"


def _write_chart_files(out: Path, points) -> None:
    """throughput.png and memory.png beside the report, for READMEs (the HTML embeds its own)."""
    for name, metric, unit, title in (("throughput.png", "images_per_s", "images / s per GPU", "throughput vs batch size"),
                                      ("memory.png", "peak_mem_allocated_gib", "GiB", "peak allocated memory vs batch size")):
        src = chart_vs_batch(points, metric, unit, title)
        if src:
            write_atomic_bytes(out / name, base64.b64decode(src.split(",", 1)[1]))


def write_all(out_dir, points, *, skipped=(), history=None, verdicts=None, baseline=None, notes=()) -> Path:
    """report.html, points.json and points.csv of the same points, each written atomically."""
    out = Path(out_dir)
    write_json(out / "points.json", points)
    write_atomic(out / "points.csv", to_csv(points))
    write_atomic(out / "summary.md", summary_markdown(points))
    _write_chart_files(out, points)
    write_atomic(out / "report.html", html_report(points, skipped=skipped, history=history,
                                                  verdicts=verdicts, baseline=baseline, notes=notes))
    return out / "report.html"
