"""Bench matrix on CPU, resume after a kill, the HTML report (rendered in headless Chromium), the gate."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runs import CPU_BENCH as ALL
from vitcore import ConfigError
from vitcore.cli import gating
from vitcore.gate import budgets
from vitcore.reporting import analysis, report
from vitcore.spec.points import key as point_key
from vitcore.store.results import load, read_points


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    p = subprocess.run(ALL + ["--batch-sizes", "8,16", "--out", str(out), "--finetune", "--finetune-epochs", "2"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.mark.slow
def test_matrix_writes_every_point_and_the_skips(bench_dir):
    points = read_points(bench_dir / "points.jsonl")
    keys = {point_key(p) for p in points}
    # torch_ddp + 4 hybrid_parallel entries + the eager plain-PyTorch reference + torch_ddp's bare
    # hand-written twin, 2 batch sizes
    assert len(keys) == len(points) == 2 * 7
    assert all(p["status"] == "ok" and p["images_per_s"] > 0 for p in points)
    assert all(p["dataset"] and p["weights"] and p["git_sha"] and p["torch"] for p in points)
    assert [point_key(p) for p in json.loads((bench_dir / "points.json").read_text())] == list(keys_in_order(points))
    csv_rows = (bench_dir / "points.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(points) + 1


def keys_in_order(points):
    return (point_key(p) for p in points)


@pytest.mark.slow
def test_report_lists_skipped_plugins_with_reason(bench_dir):
    html = (bench_dir / "report.html").read_text()
    assert "needs CUDA" in html and "gemini" in html
    assert html.count("<tr class='point") == 14  # 'point noisy' too: a CPU run flags its noisy points
    assert "reference_compiled bf16: torch.compile on a CPU" in html
    assert "bare_torch_ddp_fp16 fp16: fp16 autocast with a GradScaler needs CUDA" in html


@pytest.mark.slow
def test_report_states_the_harness_overhead(bench_dir):
    rows = analysis.harness_rows(json.loads((bench_dir / "points.json").read_text()))
    assert sorted(r["batch_size"] for r in rows) == [8, 16]
    assert all(r["plugin"] == "torch_ddp" and r["bare_images_per_s"] > 0 for r in rows)
    assert "Harness overhead" in (bench_dir / "summary.md").read_text()


@pytest.mark.slow
def test_points_carry_ratio_to_the_reference(bench_dir):
    points = json.loads((bench_dir / "points.json").read_text())
    ddp = [p for p in points if p["plugin"] == "torch_ddp"]
    assert ddp and all(p["reference"] == "reference_eager" and p["ratio_to_reference"] > 0 for p in ddp)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# The probe is the test's, not the report's: after load it measures the laid-out page at 1400x900
# and writes what it saw into the DOM, which --dump-dom prints.
PROBE = """<script>window.addEventListener('load', () => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const figs = [...document.querySelectorAll('figure.chart')];
  const out = {window: [window.outerWidth, window.outerHeight], width: window.innerWidth, height: window.innerHeight,
    page_width: document.documentElement.scrollWidth,
    summary: box(document.getElementById('summary-table')),
    verdict_head: box(document.querySelector('#points th.verdict')),
    verdict_cells: [...document.querySelectorAll('#points td.verdict')].map(box),
    points_box: box(document.querySelector('#points').parentElement),
    charts: figs.map(f => ({xlabels: JSON.parse(f.dataset.xlabels), ylabels: JSON.parse(f.dataset.ylabels),
      axes: JSON.parse(f.dataset.axes), legend: JSON.parse(f.dataset.legend),
      decoded: f.querySelector('img').complete && f.querySelector('img').naturalWidth > 100})),
    rows: document.querySelectorAll('#points tbody tr').length,
    banner: !!document.getElementById('cpu-banner')};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _render(report_html, tmp_path) -> dict:
    """What headless Chromium laid out for a report at a 1400x900 window (the probe's JSON)."""
    browser = _chromium()
    if not browser:
        pytest.skip("needs Chromium (Debian package `chromium`; .ci/run installs it)")
    import html as html_mod
    import re

    page = tmp_path / "probed.html"
    page.write_text(report_html.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                          "--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"no probe result in the DOM: {dom[:500]}"
    return json.loads(html_mod.unescape(found.group(1)))


def _assert_readable_at_1400x900(seen, n_points):
    # a 1400x900 window; its viewport (what the first screen shows) is that less the browser's own bars,
    # so "in the first screen" is checked against the smaller, visible height
    assert seen["window"] == [1400, 900] and seen["width"] == 1400 and 600 < seen["height"] <= 900
    assert seen["page_width"] <= seen["width"], "the page scrolls sideways: something overflows its box"
    left, top, right, bottom = seen["summary"]
    assert 0 <= top and bottom <= seen["height"], f"summary table not in the first screen: {seen['summary']}"
    assert seen["rows"] == len(seen["verdict_cells"]) == n_points
    assert seen["points_box"][2] <= seen["width"], "the points table's box is wider than the window"
    for l_, _, r_, _ in [seen["verdict_head"]] + seen["verdict_cells"]:
        assert 0 <= l_ and r_ <= seen["width"], "the verdict column lies outside the window's width"
    assert seen["charts"], "no chart"
    for chart in seen["charts"]:
        assert chart["decoded"], "a chart did not render"
        assert chart["xlabels"] and all(chart["xlabels"]) and all(chart["ylabels"]), chart
        lx0, ly0, lx1, ly1 = chart["legend"]
        assert lx1 > lx0 and ly1 > ly0, "a chart without a legend"
        for x0, y0, x1, y1 in chart["axes"]:  # the legend's box overlaps no plotting area
            assert lx0 >= x1 or lx1 <= x0 or ly0 >= y1 or ly1 <= y0, chart


@pytest.mark.slow
def test_cpu_report_reads_at_1400x900_in_headless_chromium(bench_dir, tmp_path):
    seen = _render((bench_dir / "report.html").read_text(), tmp_path)
    _assert_readable_at_1400x900(seen, len(read_points(bench_dir / "points.jsonl")))
    assert seen["banner"]
    # throughput and fine-tuning on a CPU, each labelled for a CPU; no memory chart (not measured)
    assert [c["ylabels"][0] for c in seen["charts"]][:1] == ["images/s per process (CPU)"]
    assert not any("GiB" in label for c in seen["charts"] for label in c["ylabels"])
    assert len(seen["charts"]) == 2


# the 84-point H100 matrix (its dated folder under reports/h100) and the gate's H100 record until 2026-11-26
H100_REPORTS = {"h100-matrix": ("reports/h100", "**/points.jsonl"),
                "h100-gate-record": ("reports/h100-gate/2026-11-25-a5d47fc", "record/points.jsonl")}


@pytest.mark.parametrize("which", H100_REPORTS)
@pytest.mark.slow
def test_committed_h100_report_reads_at_1400x900_in_headless_chromium(which, tmp_path):
    folder, pattern = H100_REPORTS[which]
    found = sorted(Path(folder).glob(pattern))
    assert found, f"no committed H100 points under {folder} ({pattern})"
    points_file = found[0]
    # rendered afresh into tmp_path with their verdicts against the committed budgets, as `vitcore report` does
    rows = analysis.enrich(load(points_file))
    verdicts, notes, _ = gating.budget_verdicts("fixtures/budgets", rows)
    page = report.write_all(tmp_path / "r", rows, verdicts=verdicts, notes=notes)
    seen = _render(page.read_text(), tmp_path)
    _assert_readable_at_1400x900(seen, len(load(points_file)))
    assert not seen["banner"]
    assert all(label in ("images/s per GPU", "GiB per GPU", "cross-entropy loss", "accuracy")
               for c in seen["charts"] for label in c["ylabels"])


@pytest.mark.slow
def test_refuses_to_overwrite_without_resume(bench_dir):
    p = subprocess.run(ALL + ["--plugins", "torch_ddp", "--batch-sizes", "8", "--out", str(bench_dir)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "exists; pass --resume" in p.stderr


def _gpu_like(points, factor=1.0):
    """The bench's CPU points as a GPU run would record them (6 processes, device time,
    launches, steady memory), images/s scaled by factor: the gate's inputs without a GPU."""
    return [p | {"images_per_s": p["images_per_s"] * factor, "processes": 6,
                 "images_per_s_process_medians": [p["images_per_s"] * factor * (1 + 0.002 * i) for i in range(6)],
                 "device_ms_per_step": 10.0, "launches_per_step": 500.0,
                 "steady_mem_allocated_gib": 1.0, "steady_mem_reserved_gib": 1.5} for p in points]


def _gate_cli(tmp_path, current, baseline, *extra):
    cur, base = tmp_path / "current.json", tmp_path / "baseline.json"
    cur.write_text(json.dumps(current))
    base.write_text(json.dumps(baseline))
    return subprocess.run([sys.executable, "-m", "vitcore.cli", "report", str(cur), "--out", str(tmp_path / "r"),
                           "--baseline", str(base), *extra], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_gate_fails_on_a_faster_baseline_and_passes_on_itself(bench_dir):
    points = _gpu_like(read_points(bench_dir / "points.jsonl"))
    th = budgets.parse_fail_on("throughput:5%,memory:2%")
    regressions = budgets.compare_runs(points, _gpu_like(read_points(bench_dir / "points.jsonl"), 1.10), th).regressions
    assert len(regressions) == len(points) and all("images/s" in r and "-9.1%" in r for r in regressions)
    assert budgets.compare_runs(points, points, th).regressions == []


@pytest.mark.slow
def test_gate_cli_exit_codes_and_a_verdict_per_metric_in_the_report(bench_dir, tmp_path):
    points = _gpu_like(read_points(bench_dir / "points.jsonl"))
    bad = _gate_cli(tmp_path, points, _gpu_like(read_points(bench_dir / "points.jsonl"), 1.10), "--fail-on",
                    "throughput:5%")
    assert bad.returncode == 1 and "REGRESSIONS" in bad.stderr and "images/s" in bad.stderr
    good = _gate_cli(tmp_path, points, points)
    assert good.returncode == 0 and "no regressions" in good.stdout, good.stderr
    html = (tmp_path / "r" / "report.html").read_text()
    cell = "throughput pass (+0.0%); device_time pass (+0.0%); launches pass (+0.0%); memory pass (+0.0%)"
    assert html.count(cell) == len(points)


@pytest.mark.parametrize("case,needle", [
    ("missing", "does not exist"),
    ("other-device", "this run is on"),
    ("extra-point", "point(s) this run does not measure"),
    ("zero", "a baseline value must be a positive number"),
])
@pytest.mark.slow
def test_gate_fails_closed_in_one_line(bench_dir, tmp_path, case, needle):
    points = _gpu_like(read_points(bench_dir / "points.jsonl"))
    baseline = {"missing": None, "other-device": [p | {"gpu_name": "NVIDIA A100-SXM4-80GB", "gpu_count": 1}
                                                  for p in points],
                "extra-point": points + [points[0] | {"batch_size": 999}],
                "zero": [points[0] | {"device_ms_per_step": 0.0}] + points[1:]}[case]
    p = _gate_cli(tmp_path, points, baseline or [])
    if case == "missing":
        p = subprocess.run([sys.executable, "-m", "vitcore.cli", "report", str(bench_dir / "points.jsonl"), "--out",
                            str(tmp_path / "r"), "--baseline", str(tmp_path / "nonexistent.jsonl")],
                           capture_output=True, text=True, timeout=300)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("vitcore: error:")]
    assert p.returncode == 2 and len(errors) == 1 and needle in errors[0], p.stderr[-2000:]
    assert not (tmp_path / "r" / "report.html").exists()


@pytest.mark.parametrize("text", ["speed:5%", "throughput:5", "", "memory:x%"])
def test_fail_on_syntax_errors(text):
    with pytest.raises(ConfigError):
        budgets.parse_fail_on(text)


def test_markdown_tables_from_committed_gpu_results():
    points = load("reports/h100/2026-11-24-0abb0f6/points.jsonl")
    table = report.performance_table(points)
    assert "| hybrid_parallel | bf16 | fast |" in table and "bs128 img/s" in table
    assert "| low_level_zero_s1 | fp16 | study |" in table


@pytest.mark.slow
def test_scaling_rows_compare_with_one_gpu_of_the_same_family(bench_dir):
    rows = analysis.scaling_rows(read_points(bench_dir / "points.jsonl"))
    tp2 = [r for r in rows if r["plugin"] == "hybrid_parallel_tp2"]
    assert len(tp2) == 2 and all(r["world_size"] == 2 and r["efficiency"] > 0 for r in tp2)
    assert "id='scaling'" in (bench_dir / "report.html").read_text()


@pytest.mark.slow
def test_points_written_before_the_family_field_still_report(bench_dir, tmp_path):
    """A points file from an older version lacks `family`: the report takes it from the registry
    instead of stopping with a KeyError (found on a committed H100 point)."""
    old = tmp_path / "old.jsonl"
    rows = [{k: v for k, v in p.items() if k != "family"} for p in load(bench_dir / "points.jsonl")]
    old.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from vitcore.spec import plugins

    entries = [r for r in rows if r["plugin"] in plugins.REGISTRY]
    assert any(r["plugin"] != plugins.REGISTRY[r["plugin"]].family for r in entries)  # e.g. hybrid_parallel_tp2
    assert all(analysis.family(r) == plugins.REGISTRY[r["plugin"]].family for r in entries)
    p = subprocess.run([sys.executable, "-m", "vitcore.cli", "report", str(old), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "r" / "report.html").stat().st_size > 0
