"""Reports from saved results: Markdown tables (README), later HTML with charts."""

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


def _fmt(v, spec=".1f", missing="-"):
    return missing if v is None else format(v, spec)


def performance_table(points: list[dict]) -> str:
    perf = [p for p in points if p.get("test", "performance") == "performance" and "batch_size" in p]
    sizes = sorted({p["batch_size"] for p in perf})
    by = {}
    for p in perf:
        by.setdefault((p["plugin"], p["precision"]), {})[p["batch_size"]] = p
    head = ["plugin", "precision"] + [f"bs{b} img/s (spread)" for b in sizes] + \
           [f"bs{b} peak alloc / reserved GiB" for b in sizes] + [f"bs{sizes[-1]} MFU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (plugin, prec), row in sorted(by.items()):
        cells = [plugin, prec]
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('images_per_s'))} ({_fmt(p.get('spread'), '.0%')})" if p else "not run")
        for b in sizes:
            p = row.get(b, {})
            cells.append(f"{_fmt(p.get('peak_mem_allocated_gib'), '.2f')} / {_fmt(p.get('peak_mem_reserved_gib'), '.2f')}"
                         if p else "not run")
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
