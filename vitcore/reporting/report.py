"""Rendering only: Markdown tables (README), a self-contained HTML page with charts, CSV.

Columns, formats and the glossary come from the point schema (vitcore.spec.points); derived numbers
from vitcore.reporting.analysis; verdicts from vitcore.gate.budgets. Nothing here computes a result.
"""

from __future__ import annotations

import csv
import html
import io
import json
import sys
from pathlib import Path

from vitcore.files import write_atomic, write_atomic_bytes, write_json
from vitcore.gate import budget_files
from vitcore.reporting import analysis, charts
from vitcore.reporting.analysis import enrich, matrix_points
from vitcore.reporting.best import all_targets, best_table
from vitcore.reporting.compiled import compile_table
from vitcore.reporting.host import NOT_TRACED, host_table
from vitcore.reporting.markdown import fmt as _fmt
from vitcore.reporting.markdown import md_table as _md_table
from vitcore.reporting.markdown import times as _times
from vitcore.spec import points as schema


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
    the tests' own rule (budget_files.check): one row per point, one column per gate group."""
    groups = schema.gate_groups()
    head = ["plugin", "precision", "bs", "img/s (spread)", "device ms/step", "launches/step"] + groups
    rows = []
    for p in sorted((p for p in points if p.get("test") == "performance"), key=lambda p: (p["plugin"], p["batch_size"])):
        cells = []
        for g in groups:
            try:
                _, verdicts, _ = budget_files.check(folder, p, g)
                cells.append("; ".join(v.short().split(" ", 1)[1] for v in verdicts))
            except budget_files.NoBudget as e:
                cells.append(f"no budget: {e}")
        rows.append([p["plugin"], p["precision"], p["batch_size"],
                     f"{_fmt(p.get('images_per_s'), '.0f')} ({_fmt(p.get('spread'), '.0%')})",
                     _fmt(p.get("device_ms_per_step"), ".2f"), _fmt(p.get("launches_per_step"), ".0f")] + cells)
    return "\n".join(_md_table(head, rows))


# --- HTML ---------------------------------------------------------------------------------------
def chart_vs_batch(points, metric, ylabel=None, title="", baseline=None) -> str | None:
    """A chart's PNG data URL (pytest-html embeds it); the axis labels follow the device kind, so
    `ylabel` is ignored and kept only for callers that pass it."""
    chart = charts.chart_vs_batch(points, metric, title, baseline) if charts.available() else None
    return chart.src if chart else None


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


# (label, field) rows of the environment section; gpu_name is not one (the device row names the GPU)
ENV_ROWS = (("device", "device"), ("GPUs", "gpu_count"), ("NVIDIA driver", "driver"), ("PyTorch", "torch"),
            ("CUDA", "cuda"), ("Colossal-AI", "colossalai"), ("transformers", "transformers"), ("Python", "python"),
            ("suite commit", "git_sha"), ("measured (UTC)", "date"), ("dataset", "dataset"), ("weights", "weights"))
RUN_ROWS = (("profile", "profile"), ("optimizer steps per window", "steps"), ("timed windows per process", "repeats"),
            ("warm-up steps", "warmup"), ("minimum window (s)", "min_window_s"), ("processes pooled", "processes"),
            ("command line", "command"))
SCALING_COLS = {"plugin": "plugin", "precision": "precision", "batch_size": "batch_size", "world_size": "world_size",
                "images_per_s_per_gpu": "images_per_s", "efficiency": "spread",
                "peak_mem_allocated_gib": "peak_mem_allocated_gib",
                "one_gpu_peak_mem_allocated_gib": "peak_mem_allocated_gib"}  # column -> field whose format it takes
CPU_BANNER = ("CPU run: timings on a CPU are a smoke test. They show that every plugin runs and what the code "
              "does; they say nothing about how the plugins compare on GPUs. Derived tables use only points whose "
              f"spread is under {analysis.CPU_SPREAD_LIMIT:.0%}.")


def _values(points, name) -> str:
    """A run's value of one field: one value, or each distinct value (a resumed or mixed run)."""
    seen = list(dict.fromkeys(p[name] for p in points if p.get(name) not in (None, "")))
    if len(seen) > 3 and len({type(v) for v in seen}) == 1:  # steps, dates: their range
        return f"{min(seen)} to {max(seen)} ({len(seen)} values)"
    return ", ".join(map(str, seen)) if seen else "not recorded"


def _env_html(points, history) -> str:
    perf = analysis.perf_points(points) or points
    rows = [("Environment", ENV_ROWS), ("Run parameters", RUN_ROWS)]
    out = "".join(f"<tr><th colspan='2' class='group'>{group}</th></tr>" + "".join(
        f"<tr><th>{label}</th><td>{_esc(_values(perf, name))}</td></tr>" for label, name in fields)
        for group, fields in rows)
    out += "".join(f"<tr><th>{_esc(label)}</th><td>{_esc(v)}</td></tr>" for label, v in charts.history_rows(history))
    return f"<h2>Environment and run parameters</h2><table id='environment'>{out}</table>"


def _points_html(points, verdicts, noisy_keys=frozenset()) -> str:
    """Every point; the verdict first (sticky) so it stays on screen while the table scrolls."""
    cols = schema.table_fields()
    body = []
    for p in points:
        k = schema.key(p)
        cell = verdicts.get(k, "no budget")
        flag = " (too noisy)" if k in noisy_keys else ""
        cells = "".join(f"<td>{_esc(f.format(p.get(f.name)))}{flag if f.name == 'spread' else ''}</td>" for f in cols)
        body.append(f"<tr class='point{' noisy' if flag else ''}'><td class='verdict'>"
                    f"{_esc(analysis.verdict_outcome(cell))}</td>{cells}<td>{_esc(cell)}</td></tr>")
    return (f"<h2>Points ({len(points)})</h2>\n<div class='scroll'><table id=\"points\"><thead><tr>"
            f"<th class='verdict'>verdict</th>{''.join(f'<th>{f.title}</th>' for f in cols)}"
            f"<th>verdict per metric (change against the budget)</th></tr></thead>\n"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _scaling_html(points, all_points) -> str:
    if not analysis.scaling_rows(all_points):
        return ""
    scaling = analysis.scaling_rows(points)
    head = "<h2>Scaling (per GPU, efficiency against one GPU of the same family)</h2>"
    if not scaling:
        return head + "<p id='scaling' class='noisy'>every multi-process point is too noisy (see below)</p>"
    fmt = {c: schema.get(f) for c, f in SCALING_COLS.items()}
    return (head + "<table id='scaling'><tr>" + "".join(f"<th>{c}</th>" for c in SCALING_COLS) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_esc(fmt[c].format(r[c]))}</td>" for c in SCALING_COLS) + "</tr>"
                      for r in scaling) + "</table>")


def _analysis_html(points) -> str:
    out = "".join(f"<h2>{_esc(name)}</h2>{_md_to_html(md)}" for name, md in (
        ("Fast profile beside the study profile", profiles_table(points)),
        ("Options, one at a time (ablation)", ablation_table(points)),
        ("Harness overhead over a bare hand-written loop", harness_table(points)),
        ("torch.compile per entry, eager beside compiled", compile_table(points)),
        ("Each plugin at its best beside timm compiled", best_table(points)))
        if not md.startswith("(no"))
    goals = all_targets(points)
    if goals:
        out += "<h2>Targets</h2><ul id='targets'>" + "".join(f"<li>{_esc(g)}</li>" for g in goals) + "</ul>"
    return out


def _host_html(points) -> str:
    """Host time per plugin beyond its reference (issue 29): every traced point, noisy or not (its
    figures come from the profiled steps, not from the timed windows' spread); one line untraced."""
    md = host_table(points)
    head = "<h2>Host time per plugin, beyond the reference (profiled)</h2>"
    if md == NOT_TRACED:
        return head + f"<p id='host-time' class='note'>{_esc(md)}</p>"
    return head + f"<div id='host-time'>{_md_to_html(md)}</div>"


def _noisy_html(noisy) -> str:
    if not noisy:
        return ""
    items = "".join(f"<li>{_esc(p['plugin'])} {_esc(p['precision'])} {_esc(p.get('profile'))} bs{p['batch_size']}: "
                    f"spread {_fmt(p.get('spread'), '.0%', 'unknown')}</li>" for p in noisy)
    return (f"<h2>Too noisy for the derived tables ({len(noisy)})</h2><p>spread at or over "
            f"{analysis.CPU_SPREAD_LIMIT:.0%}: left out of the targets, scaling and harness overhead</p>"
            f"<ul id='noisy'>{items}</ul>")


def _pick(p, what, cpu=False) -> str:
    if not p:
        return f"<td>{what}</td>"
    ratio, mem, mfu = p.get("ratio_to_reference"), p.get("peak_mem_allocated_gib"), p.get("mfu")
    parts = [f"{_fmt(p.get('images_per_s'), '.0f')} img/s"] + ([f"{mem:.2f} GiB"] if mem is not None else []) + \
        [f"{_times(ratio)} the {_esc(p.get('reference'))}" if ratio else
         "no quiet reference to compare with" if cpu else "no reference in this run"] + \
        ([f"MFU {mfu:.1%}"] if mfu is not None else [])
    return f"<td><b>{_esc(p['plugin'])}</b> {_esc(p['precision'])} {_esc(p.get('profile'))}: {', '.join(parts)}</td>"


def summary_html(points, verdicts) -> str:
    """The conclusion first: per batch size the fastest and the leanest plugin, the verdict counts,
    each failure in one line (vitcore.reporting.analysis.summary)."""
    s = analysis.summary(points, verdicts, schema.key)
    none = "no point quiet enough" if s["cpu"] else "none measured"
    lean_none = "memory is not measured on a CPU" if s["cpu"] else "none measured"
    rows = "".join(f"<tr><th>bs {r['batch_size']}</th>{_pick(r['fastest'], none, s['cpu'])}{_pick(r['leanest'], lean_none, s['cpu'])}</tr>"
                   for r in s["rows"])
    counts = ", ".join(f"{n} {outcome}" for outcome, n in s["counts"].items())
    if s["counts"]["no budget"]:
        counts += (" (no budget: this device has no budget entry for the point, so nothing judged it; "
                   "`vitcore bench --update-budgets DIR` records one, `--compare FILE` judges against a run)")
    failures = "".join(f"<li>{_esc(f)}</li>" for f in s["failures"]) or "<li>none</li>"
    return (f"<section id='summary'><h2>Summary</h2><table id='summary-table'><tr><th>batch size</th>"
            f"<th>fastest (images/s{f'; points under {analysis.CPU_SPREAD_LIMIT:.0%} spread' if s['cpu'] else ''})</th><th>leanest (peak allocated memory)</th></tr>{rows}</table>"
            f"<p id='verdict-counts'>Verdicts per point: {counts}.</p>"
            f"<p>Failures:</p><ul id='failures'>{failures}</ul></section>")


def glossary_html() -> str:
    """Every point field with its unit and meaning, from the schema."""
    rows = "".join(f"<tr><th>{_esc(f.title)}</th><td>{_esc(f.unit)}</td><td>{_esc(f.description)}</td></tr>"
                   for f in schema.FIELDS)
    return f"<h2>Glossary</h2><table id='glossary'><tr><th>field</th><th>unit</th><th>meaning</th></tr>{rows}</table>"


def _chart_html(c: charts.Chart) -> str:
    """The PNG with what matplotlib laid out, as data attributes (a browser test reads them)."""
    meta = {"xlabels": c.xlabels, "ylabels": c.ylabels, "axes": c.axes, "legend": c.legend}
    attrs = "".join(f" data-{k}='{_esc(json.dumps(v))}'" for k, v in meta.items())
    return (f"<figure class='chart'{attrs} data-legend-outside='{int(c.legend_outside)}'>"
            f"<figcaption>{_esc(c.title)}</figcaption><img class='chart' alt='{_esc(c.title)}' src='{c.src}'></figure>")


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1600px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}img.chart{max-width:100%}
.banner{background:#fff3cd;border:2px solid #c69500;padding:8px 12px;font-weight:bold}
.scroll{overflow:auto;max-width:100%;max-height:80vh;border:1px solid #999}
#points td.verdict,#points th.verdict{position:sticky;left:0;background:#f4f4f4;z-index:1}
#points thead th{position:sticky;top:0;background:#eee}#points thead th.verdict{z-index:2}
tr.noisy td{color:#888}th.group{background:#eee}figcaption{font-weight:bold}"""


def html_report(points, *, skipped=(), history=None, verdicts=None, baseline=None, notes=(),
                title="vitcore benchmark") -> str:
    """One self-contained page: the summary, charts as embedded PNG, every point with its verdict;
    on a CPU a banner, and derived tables from quiet points only."""
    verdicts = verdicts or {}
    cpu = analysis.is_cpu_run(points)
    quiet, noisy = analysis.split_noisy(points) if cpu else (points, [])
    skipped_html = "".join(f"<li>{_esc(s['plugin'])} {_esc(s.get('precision') or '')}: {_esc(s['reason'])}</li>"
                           for s in skipped) or "<li>none</li>"
    figs = "".join(_chart_html(c) for c in charts.report_charts(points, history, baseline)) if charts.available() \
        else f"<p id='charts-missing' class='banner'>{_esc(charts.MISSING)}</p>"  # never silently chartless
    banner = f"<p id='cpu-banner' class='banner'>{_esc(CPU_BANNER)}</p>" if cpu else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{_esc(title)}</h1>
{banner}
{summary_html(points, verdicts)}
{"".join(f"<p class='note'>{_esc(n)}</p>" for n in notes)}
<h2>Charts</h2>{figs or "<p>no finished points to chart</p>"}
{_points_html(points, verdicts, {schema.key(p) for p in noisy})}
{_scaling_html(quiet, points)}
{_analysis_html(quiet)}
{_host_html(points)}
{_noisy_html(noisy)}
{_env_html(points, history)}
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
             ("torch.compile per entry", compile_table(points)),
             ("Each plugin at its best beside timm compiled", best_table(points)),
             ("Host time per plugin, beyond the reference", host_table(points)),
             ("Targets", "\n".join(f"- {t}" for t in all_targets(points)) or "(none measured)")]
    return "\n\n".join(f"### {h}\n\n{b}" for h, b in parts) + "\n"


def _write_chart_files(out: Path, points) -> None:
    """throughput.png and memory.png beside the report, for READMEs (the HTML embeds its own);
    without matplotlib, one console line saying the report has none."""
    if not charts.available():
        print(f"[vitcore] report without charts: {charts.MISSING}", file=sys.stderr)
        return
    for name, metric, title in (("throughput.png", "images_per_s", "Throughput"),
                                ("memory.png", "peak_mem_allocated_gib", "Peak memory, allocated")):
        chart = charts.chart_vs_batch(points, metric, title)
        if chart:
            write_atomic_bytes(out / name, charts.png_bytes(chart))


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
