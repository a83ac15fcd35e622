"""`vitcore report` input (issue 26): a point that lacks the fields identifying it is an error naming
the line and the fields, before anything is written (item 4), every committed results file still
loads, and without matplotlib the report is written without charts and says so (item 6).

The CLI runs in this process (a subprocess pays the imports again), except where matplotlib must be
absent from a fresh interpreter.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import run
from vitcore.store import results
from vitcore.store.results import ResultsError

ROOT = Path(__file__).resolve().parent.parent
@functools.cache
def whole() -> dict:
    """A committed H100 point, read when a test asks (a tree without reports/, such as the GPU host's
    copy, still collects every other test)."""
    return json.loads((ROOT / "reports/h100/2026-11-24-0abb0f6/points.jsonl").read_text().splitlines()[0])
EVERY_MISSING = "precision, profile, batch_size, status, torch, gpu_name, gpu_count, cuda"


def _jsonl(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_the_issues_point_of_only_a_plugin_is_one_error_line_and_no_report(tmp_path):
    f = _jsonl(tmp_path / "points.jsonl", whole(), whole() | {"batch_size": 256}, {"plugin": "torch_ddp"})
    rc, err = run("report", f, "--out", tmp_path / "r")
    assert rc == 2 and err.splitlines() == [
        f"vitcore: error: {f}:3: point missing {EVERY_MISSING} (the fields that identify it); "
        "`vitcore report --skip-bad` reports the rest"], err
    assert not (tmp_path / "r" / "report.html").exists()


@pytest.mark.parametrize("field", [*results.required_fields(), *results.DEVICE_NAMES])
def test_each_identifying_field_is_required_by_name(tmp_path, field):
    f = _jsonl(tmp_path / "points.jsonl", {k: v for k, v in whole().items() if k != field})
    with pytest.raises(ResultsError) as e:
        results.load(f)
    assert str(e.value).startswith(f"{f}:1: point missing {field} (the fields that identify it)")


def test_fields_with_a_schema_default_stay_optional_and_null_device_fields_are_a_cpu():
    older = {k: v for k, v in whole().items() if k not in ("variant", "model", "world_size", "family")}
    assert results.missing_fields(older) == []
    assert results.missing_fields(whole() | {"gpu_name": None, "gpu_count": 0, "cuda": None}) == []
    assert results.missing_fields(whole() | {"status": None}) == ["status"]


def test_skip_bad_reports_the_rest_naming_each_line_left_out(tmp_path):
    f = _jsonl(tmp_path / "points.jsonl", whole(), {"plugin": "torch_ddp", "precision": "fp32"})
    rc, err = run("report", f, "--out", tmp_path / "r", "--skip-bad")
    assert rc == 0, err
    assert f"[vitcore] skipped {f}:2: point missing profile, batch_size, status, torch, gpu_name, gpu_count, cuda" in err
    assert len(json.loads((tmp_path / "r" / "points.json").read_text())) == 1


def test_a_json_list_and_a_baseline_are_held_to_the_same_fields(tmp_path):
    listed = tmp_path / "points.json"
    listed.write_text(json.dumps([whole(), {"plugin": "torch_ddp", "batch_size": 8}]))
    with pytest.raises(ResultsError, match=rf"^{listed}:1: item 1: point missing precision, profile, status, "):
        results.load(listed)
    ok = _jsonl(tmp_path / "ok.jsonl", whole())
    rc, err = run("report", ok, "--out", tmp_path / "r", "--baseline", listed)
    assert rc == 2 and f"{listed}:1: item 1: point missing" in err and not (tmp_path / "r" / "report.html").exists()


def test_gpu_tier_correctness_rows_need_their_plugin_and_precision_only():
    parity = {"plugin": "gemini", "precision": "bf16", "test": "parity", "ok": True}
    assert results.missing_fields(parity) == []
    assert results.missing_fields(parity | {"precision": None}) == ["precision"]


COMMITTED = sorted(p for pattern in ("reports/**/points.jsonl", "reports/**/gpu-results*.jsonl", "reports/**/points.json")
                   for p in ROOT.glob(pattern) if not p.relative_to(ROOT).parts[1].startswith("latest"))


def test_every_committed_results_file_still_loads():
    assert len(COMMITTED) >= 50  # the committed evidence is found at all
    failed = []
    for f in COMMITTED:
        try:
            assert results.load(f)
        except ResultsError as e:
            failed.append(str(e))
    assert failed == []


# --- without matplotlib (the `report` extra) ---------------------------------------------------------
BLOCKED = "import sys; sys.modules['matplotlib'] = None; from vitcore.cli import main; sys.exit(main({argv!r}))"


def _without_matplotlib(*argv):
    return subprocess.run([sys.executable, "-c", BLOCKED.format(argv=[str(a) for a in argv])], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_commands_run_without_matplotlib():
    p = _without_matplotlib("plugins", "--device", "cpu")
    assert p.returncode == 0 and "torch_ddp" in p.stdout, p.stderr[-3000:]


def test_a_report_without_matplotlib_is_written_whole_and_says_it_has_no_charts(tmp_path):
    f = _jsonl(tmp_path / "points.jsonl", whole(), whole() | {"batch_size": 256})
    p = _without_matplotlib("report", f, "--out", tmp_path / "r")
    assert p.returncode == 0, p.stderr[-3000:]
    said = [ln for ln in p.stderr.splitlines() if "matplotlib" in ln]
    assert said == ["[vitcore] report without charts: charts need matplotlib: pip install vitcore[report]"], p.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<p id='charts-missing' class='banner'>charts need matplotlib: pip install vitcore[report]</p>" in page
    assert "<img class='chart'" not in page and not (tmp_path / "r" / "throughput.png").exists()
    assert len(json.loads((tmp_path / "r" / "points.json").read_text())) == 2  # the report itself is whole
    # with matplotlib, the same report has its charts (the check above can tell them apart)
    rc, err = run("report", f, "--out", tmp_path / "r2")
    assert rc == 0, err
    assert "<img class='chart'" in (tmp_path / "r2" / "report.html").read_text()
    assert (tmp_path / "r2" / "throughput.png").is_file() and "charts need matplotlib" not in err
