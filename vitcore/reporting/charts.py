"""The report's charts (matplotlib, headless): throughput and memory against batch size, and the
fine-tuning curves (one run, or several on the same axes, each labelled by its weights). Each chart
comes back with metadata measured from matplotlib's own layout (axis labels, the bounding boxes of
the plotting areas and of the legend), which the report writes as data attributes so a browser test
can check what PNG pixels cannot tell, and with the legend's entries and each drawn line's data
(Chart.labels, Chart.lines: for tests, not written into the page).

matplotlib is the `report` extra and is imported only to draw (`available()` says whether it can
be): `import vitcore.cli` and every command but the drawing itself run without it.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache

from vitcore.reporting.analysis import family, is_cpu_run, matrix_points

MISSING = "charts need matplotlib: pip install vitcore[report]"


@lru_cache(maxsize=1)
def _plt():
    # matplotlib: only when drawing (it is the optional `report` extra)
    import matplotlib

    matplotlib.use("Agg")  # headless, chosen before pyplot is imported
    # matplotlib: only when drawing (it is the optional `report` extra)
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    """Whether matplotlib can be imported (a broken matplotlib still raises, naming its own error)."""
    try:
        _plt()
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "matplotlib":
            raise
        return False
    return True

# Distinguishable at a glance and in print: no two shades of one hue side by side (tab20's pairs
# made gemini and gemini_auto look alike). The references are drawn dashed black, apart from these.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#e6550d", "#843c39", "#00a087", "#f0027f")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")  # one per family
REFERENCE_MARKERS = {"reference_compiled": "*", "reference_eager": "x"}


@dataclass
class Chart:
    title: str
    src: str  # PNG data URL
    xlabels: list[str] = field(default_factory=list)
    ylabels: list[str] = field(default_factory=list)
    axes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] per plotting area, figure px
    legend: list[float] = field(default_factory=list)  # [x0, y0, x1, y1] of the legend, figure px
    labels: list[str] = field(default_factory=list)  # the legend's entries, in order
    lines: dict[str, list[list[float]]] = field(default_factory=dict)  # label -> [[x, y], ...] of each drawn line

    @property
    def legend_outside(self) -> bool:
        """Whether the legend overlaps no plotting area (boxes in the same figure pixels)."""
        if not self.legend:
            return False
        lx0, ly0, lx1, ly1 = self.legend
        return all(lx0 >= x1 or lx1 <= x0 or ly0 >= y1 or ly1 <= y0 for x0, y0, x1, y1 in self.axes)


def _box(artist, renderer) -> list[float]:
    b = artist.get_window_extent(renderer)
    return [round(b.x0, 1), round(b.y0, 1), round(b.x1, 1), round(b.y1, 1)]


def _finish(fig, title, axes, legend) -> Chart:
    """Lay the figure out, measure its boxes, encode it as PNG."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    meta = dict(xlabels=[a.get_xlabel() for a in axes], ylabels=[a.get_ylabel() for a in axes],
                axes=[_box(a, renderer) for a in axes], legend=_box(legend, renderer) if legend else [],
                labels=[t.get_text() for t in legend.get_texts()] if legend else [],
                lines={ln.get_label(): [list(xy) for xy in zip(ln.get_xdata(), ln.get_ydata(), strict=True)]
                       for a in axes for ln in a.get_lines() if not ln.get_label().startswith("_")})
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return Chart(title=title, src="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), **meta)


def _series(points, metric) -> dict[str, list[dict]]:
    """{"plugin precision profile": [point, ...] by batch size} of the matrix's finished points."""
    out: dict[str, list[dict]] = {}
    for p in matrix_points(points):
        if p.get("status") == "ok" and p.get(metric) is not None:
            out.setdefault(f"{p['plugin']} {p['precision']} {p.get('profile', '')}".strip(), []).append(p)
    return {k: sorted(v, key=lambda p: p["batch_size"]) for k, v in sorted(out.items())}


def _style(points: list[dict], index: int, families: list[str]) -> dict:
    """Reference: dashed black; bare loop: dotted grey; a plugin: its family's marker, a colour of its own."""
    first = points[0]
    if first.get("mirrors"):  # a bare hand-written twin of a plugin: grey dotted, apart from the references
        return dict(color="#666666", ls=":", marker="+" if "fp16" in first["plugin"] else "1", lw=1.4)
    if family(first) == "reference":
        return dict(color="black", ls="--", marker=REFERENCE_MARKERS.get(first["plugin"], "+"), lw=1.6)
    return dict(color=COLOURS[index % len(COLOURS)], ls="-", lw=1.2,
                marker=MARKERS[families.index(family(first)) % len(MARKERS)])


def _errors(pts, metric):
    """Min-max over the timed windows below and above each plotted median (throughput only)."""
    if metric != "images_per_s" or not all(p.get("images_per_s_windows") for p in pts):
        return None
    return [[p[metric] - min(p["images_per_s_windows"]) for p in pts],
            [max(p["images_per_s_windows"]) - p[metric] for p in pts]]


def axis_labels(points, metric: str) -> tuple[str, str]:
    """x and y labels naming the device kind: a CPU run never reads 'per GPU'."""
    cpu = is_cpu_run(points)
    x = "batch size per process (CPU run)" if cpu else "batch size per GPU"
    if metric == "images_per_s":
        return x, "images/s per process (CPU)" if cpu else "images/s per GPU"
    return x, "GiB per GPU"


def chart_vs_batch(points, metric, title, baseline=None) -> Chart | None:
    """One line per plugin entry against batch size, x ticks at the measured sizes only."""
    series = _series(points, metric)
    if not series:
        return None
    families = sorted({family(v[0]) for v in series.values()})
    # matplotlib: only when drawing (it is the optional `report` extra)
    from matplotlib.ticker import NullLocator

    base_series = _series(baseline, metric) if baseline else {}
    fig, ax = _plt().subplots(figsize=(9, 4.5))
    colour_index = 0
    for name, pts in series.items():
        style = _style(pts, colour_index, families)
        colour_index += style["ls"] == "-"
        x = [p["batch_size"] for p in pts]
        ax.errorbar(x, [p[metric] for p in pts], yerr=_errors(pts, metric), capsize=3, ms=5, label=name, **style)
        old = base_series.get(name)
        if old:
            ax.plot([p["batch_size"] for p in old], [p[metric] for p in old], marker="x", ls=":",
                    color=style["color"], alpha=0.6, label=f"{name} (baseline)")
    sizes = sorted({p["batch_size"] for pts in series.values() for p in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    xlabel, ylabel = axis_labels(points, metric)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" (bars: min-max over timed windows)" if metric == "images_per_s" else ""), fontsize=10)
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                       ncol=1 if len(series) <= 18 else 2)
    return _finish(fig, title, [ax], legend)


def _finetune_axes(a, b, x) -> None:
    """The loss (a) and accuracy (b) axes of a fine-tuning chart, ticked at the epochs `x`."""
    b.set_ylim(0, 1.02)
    for ax, ylabel in ((a, "cross-entropy loss"), (b, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_xticks(x)
        ax.grid(alpha=0.3)


def chart_finetune(history: dict) -> Chart | None:
    epochs = [e for e in history.get("epochs", []) if e.get("epoch")]
    if not epochs:
        return None
    fig, (a, b) = _plt().subplots(1, 2, figsize=(9, 3.5))
    x = [e["epoch"] for e in epochs]
    a.plot(x, [e["train_loss"] for e in epochs], marker="o", color=COLOURS[0], label="train loss")
    a.plot(x, [e["eval_loss"] for e in epochs], marker="s", color=COLOURS[1], label="held-out loss")
    b.plot(x, [e["eval_accuracy"] for e in epochs], marker="^", color=COLOURS[2], label="held-out accuracy")
    _finetune_axes(a, b, x)
    legend = fig.legend(loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8)
    fig.suptitle(f"fine-tuning: {history['plugin']} {history['precision']}, {history['model']}, "
                 f"{history['dataset']}, weights {history['weights']}", fontsize=8)
    fig.tight_layout()
    return _finish(fig, "Fine-tuning", [a, b], legend)


def histories(history) -> list[dict]:
    """The fine-tuning histories a report draws: none, one (a dict) or several (a list of them)."""
    if not history:
        return []
    return [history] if isinstance(history, dict) else list(history)


def weights_label(weights) -> str:
    """A history's weights source, short enough for a legend: random-init, the stand-in's name
    (vitcore-standin-...), or the pretrained source without its notes (a long path: its last part)."""
    text = str(weights or "weights not recorded")
    if text.startswith("random-init"):
        return "random-init"
    standin = re.search(r"\(([^():]+): the suite's stand-in", text)
    if standin:
        return standin.group(1)
    head = text.split(" (", 1)[0]
    return head if len(head) <= 40 else "pretrained:" + head.rstrip("/").rsplit("/", 1)[-1]


def run_labels(runs: list[dict]) -> list[str]:
    """Each history as "WEIGHTS, PLUGIN PRECISION"; a label two runs share gets its run number."""
    labels = [f"{weights_label(h.get('weights'))}, {h.get('plugin')} {h.get('precision')}" for h in runs]
    return [f"{lab} (run {i})" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels, 1)]


def history_rows(history) -> list[tuple[str, object]]:
    """The provenance rows of the report's environment section: each history's dataset and weights."""
    runs = histories(history)
    if len(runs) == 1:
        return [("fine-tuning data", runs[0].get("dataset")), ("fine-tuning weights", runs[0].get("weights"))]
    return [(f"fine-tuning {what} ({label})", h.get(key)) for label, h in zip(run_labels(runs), runs, strict=True)
            for what, key in (("data", "dataset"), ("weights", "weights"))]


def chart_finetunes(runs: list[dict]) -> Chart | None:
    """Several fine-tuning runs on the same axes, e.g. a pretrained run beside a random-init one:
    a colour per run (train loss solid, held-out loss dashed, held-out accuracy), each line labelled
    by the run's weights source and plugin/precision (run_labels)."""
    drawn = [(label, h, [e for e in h.get("epochs", []) if e.get("epoch")])
             for label, h in zip(run_labels(runs), runs, strict=True)]
    drawn = [d for d in drawn if d[2]]
    if not drawn:
        return None
    fig, (a, b) = _plt().subplots(1, 2, figsize=(10, 3.8))
    for i, (label, _, epochs) in enumerate(drawn):
        x, colour = [e["epoch"] for e in epochs], COLOURS[i % len(COLOURS)]
        a.plot(x, [e["train_loss"] for e in epochs], marker="o", color=colour, label=f"{label}: train loss")
        a.plot(x, [e["eval_loss"] for e in epochs], marker="s", ls="--", color=colour, label=f"{label}: held-out loss")
        b.plot(x, [e["eval_accuracy"] for e in epochs], marker="^", color=colour, label=f"{label}: held-out accuracy")
    _finetune_axes(a, b, sorted({e["epoch"] for *_, epochs in drawn for e in epochs}))
    legend = fig.legend(loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=7)
    about = {str(h.get(k)): None for k in ("model", "dataset") for _, h, _ in drawn}
    fig.suptitle(f"fine-tuning, {len(drawn)} runs side by side: {', '.join(about)}", fontsize=8)
    fig.tight_layout()
    return _finish(fig, "Fine-tuning, runs side by side", [a, b], legend)


def report_charts(points, history, baseline) -> list[Chart]:
    """Throughput per profile, and peak memory where it was measured (never on a CPU), then the
    fine-tuning curves: one history's as before, several histories on the same axes."""
    profiles = sorted({p.get("profile") for p in matrix_points(points)} - {"reference", None}) or [None]
    charts = []
    for prof in profiles:
        sub = [p for p in points if prof is None or p.get("profile") in (prof, "reference")]
        tag = f" ({prof} profile)" if prof and len(profiles) > 1 else ""
        charts += [chart_vs_batch(sub, "images_per_s", f"Throughput{tag}", baseline),
                   chart_vs_batch(sub, "peak_mem_allocated_gib", f"Peak memory, allocated{tag}", baseline),
                   chart_vs_batch(sub, "peak_mem_reserved_gib", f"Peak memory, reserved{tag}", baseline)]
    runs = histories(history)
    if runs:
        charts.append(chart_finetune(runs[0]) if len(runs) == 1 else chart_finetunes(runs))
    return [c for c in charts if c]


def png_bytes(chart: Chart) -> bytes:
    return base64.b64decode(chart.src.split(",", 1)[1])
