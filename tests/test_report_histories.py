"""The study's chart reproduced (issue 30 item 4): `vitcore report --history A --history B` draws
every fine-tuning history on the same axes, each line labelled by its weights source and
plugin/precision, so a pretrained run and a random-init run read side by side; the environment
section lists each history's dataset and weights. One --history renders as it always did. The
charts are checked through their Chart objects (legend entries, the drawn lines' data), not pixels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import error_line, run
from vitcore.reporting import charts, report

ROOT = Path(__file__).resolve().parent.parent
POINT = (ROOT / "reports/h100/2026-11-24-0abb0f6/points.jsonl").read_text().splitlines()[0]
STANDIN = ("pretrained:/ckpt/standin (vitcore-standin-fmnist7-vit-tiny: the suite's stand-in for "
           "google/vit-base-patch16-224-in21k, not its weights)")
RANDOM = "random-init (vit-tiny has no pretrained weights)"

pytestmark = pytest.mark.skipif(not charts.available(), reason=charts.MISSING)


def _history(weights, accuracy, dataset="embedded:fmnist-trio", plugin="gemini", precision="fp32"):
    """A fine-tuning history as `vitcore train --out` writes it (the fields the report reads)."""
    return {"plugin": plugin, "precision": precision, "model": "vit-tiny", "dataset": dataset,
            "weights": weights, "status": "ok", "epochs_requested": len(accuracy),
            "epochs": [{"epoch": i, "train_loss": 1.5 - a, "eval_loss": 1.6 - a, "eval_accuracy": a,
                        "eval_samples": 300, "seconds": 1.0} for i, a in enumerate(accuracy, 1)]}


@pytest.fixture
def d(tmp_path) -> Path:
    (tmp_path / "ok.jsonl").write_text(POINT + "\n")
    (tmp_path / "pre.json").write_text(json.dumps(_history(STANDIN, [0.6, 0.75, 0.8])))
    (tmp_path / "rand.json").write_text(json.dumps(_history(RANDOM, [0.35, 0.45, 0.5], dataset="embedded:other")))
    return tmp_path


def _figures(html: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", html)


def test_two_histories_draw_one_chart_whose_legend_names_both_weights_sources(d):
    rc, err = run("report", f"{d}/ok.jsonl", "--out", f"{d}/r", "--history", f"{d}/pre.json",
                  "--history", f"{d}/rand.json")
    assert rc == 0, err
    html = (d / "r" / "report.html").read_text()
    fine = [t for t in _figures(html) if t.startswith("Fine-tuning")]
    assert fine == ["Fine-tuning, runs side by side"], _figures(html)
    env = dict(re.findall(r"<tr><th>(fine-tuning [^<]*)</th><td>([^<]*)</td></tr>", html))
    assert env == {"fine-tuning data (vitcore-standin-fmnist7-vit-tiny, gemini fp32)": "embedded:fmnist-trio",
                   "fine-tuning weights (vitcore-standin-fmnist7-vit-tiny, gemini fp32)": report._esc(STANDIN),
                   "fine-tuning data (random-init, gemini fp32)": "embedded:other",
                   "fine-tuning weights (random-init, gemini fp32)": report._esc(RANDOM)}

    pre, rand = (json.loads((d / f).read_text()) for f in ("pre.json", "rand.json"))
    chart = charts.report_charts([json.loads(POINT)], [pre, rand], None)[-1]
    assert chart.title == "Fine-tuning, runs side by side" and chart.legend_outside
    assert chart.ylabels == ["cross-entropy loss", "accuracy"]
    runs = ("vitcore-standin-fmnist7-vit-tiny, gemini fp32", "random-init, gemini fp32")
    assert chart.labels == [f"{r}: {what}" for r in runs for what in ("train loss", "held-out loss")] + \
        [f"{r}: held-out accuracy" for r in runs]
    for r, h in zip(runs, (pre, rand), strict=True):  # each line is its history's numbers, per epoch
        for what, key in (("train loss", "train_loss"), ("held-out loss", "eval_loss"),
                          ("held-out accuracy", "eval_accuracy")):
            assert chart.lines[f"{r}: {what}"] == [[e["epoch"], e[key]] for e in h["epochs"]]


def test_runs_are_labelled_by_weights_source_and_plugin_precision():
    assert charts.weights_label(STANDIN) == "vitcore-standin-fmnist7-vit-tiny"
    assert charts.weights_label(RANDOM) == "random-init"
    assert charts.weights_label("random-init (google/vit-base-patch16-224-in21k not in the HF cache)") == "random-init"
    assert charts.weights_label("pretrained:/ckpt/vit (classifier re-initialised: ...)") == "pretrained:/ckpt/vit"
    assert charts.weights_label("pretrained:" + "/x" * 30 + "/snapshots/abc123") == "pretrained:abc123"
    # the same weights and plugin twice: told apart by run number
    same = [_history(RANDOM, [0.3]), _history(RANDOM, [0.4]), _history(RANDOM, [0.5], precision="bf16")]
    assert charts.run_labels(same) == ["random-init, gemini fp32 (run 1)", "random-init, gemini fp32 (run 2)",
                                       "random-init, gemini bf16"]


def test_a_bad_second_history_is_one_line_naming_it_before_anything_is_written(d):
    (d / "points.json").write_text(json.dumps([{"plugin": "gemini"}]))  # a JSON object list, not a history
    (d / "notes.json").write_text(json.dumps({"plugin": "gemini", "note": "no epochs"}))
    (d / "torn.json").write_text(json.dumps(_history(RANDOM, [0.3, 0.4]) | {"epochs": [{"epoch": 1}, 7]}))
    for bad, needle in (("missing.json", "--history '{d}/missing.json' does not exist; give a JSON file"),
                        ("points.json", "--history {d}/points.json holds a JSON list; expected a JSON object"),
                        ("notes.json", '--history {d}/notes.json is not a fine-tuning history (missing precision, '
                                       'model, dataset, weights and 1 more)'),
                        ("torn.json", "--history {d}/torn.json is not a fine-tuning history (missing "
                                      "epochs[0].train_loss, epochs[0].eval_loss, epochs[0].eval_accuracy, "
                                      "epochs[1] as an object, not a JSON int)")):
        line = error_line(*run("report", f"{d}/ok.jsonl", "--out", f"{d}/r", "--history", f"{d}/pre.json",
                               "--history", f"{d}/{bad}"))
        assert needle.format(d=d) in line
        assert not (d / "r").exists(), f"{bad}: something was written before the error"


def test_one_history_renders_as_before(d):
    """The single-history chart and environment rows are the ones a dict `history` always gave, and
    the command line's one --history (now a list of one) renders the same page."""
    rc, err = run("report", f"{d}/ok.jsonl", "--out", f"{d}/r", "--history", f"{d}/pre.json")
    assert rc == 0, err
    html = (d / "r" / "report.html").read_text()
    pre = json.loads((d / "pre.json").read_text())
    assert [t for t in _figures(html) if t.startswith("Fine-tuning")] == ["Fine-tuning"]
    assert f"<tr><th>fine-tuning data</th><td>embedded:fmnist-trio</td></tr>" \
           f"<tr><th>fine-tuning weights</th><td>{report._esc(STANDIN)}</td></tr>" in html
    chart = charts.chart_finetune(pre)
    assert chart.labels == ["train loss", "held-out loss", "held-out accuracy"]
    assert chart.lines["held-out accuracy"] == [[1, 0.6], [2, 0.75], [3, 0.8]]
    points = [json.loads(POINT)]
    assert report.html_report(points, history=[pre]) == report.html_report(points, history=pre)
    assert charts.report_charts(points, [pre], None)[-1] == chart
