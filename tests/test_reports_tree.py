"""The committed evidence stays evidence: reports/ under 5 MB, no generated views in it, and the one
command that brings the views back (scripts/render_reports.sh) renders a committed run.

The views are what `vitcore report` writes from a run's points.jsonl (report.write_all): report.html,
points.json, points.csv, summary.md and the PNGs. They are rendered on demand into the ignored
reports/latest-views/ (issue 26 item 10); committing them again would grow the tree by megabytes per run.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "render_reports.sh"
LIMIT_BYTES = 5_000_000  # the "under 5 MB", in decimal bytes
VIEWS = {"report.html", "points.json", "points.csv", "summary.md", "throughput.png", "memory.png"}
RENDER_LOGS = {"render.log", "report.log"}  # the script's console capture; vitcore's third-party log
# two small runs: a plain one (2 points) and a check against its baseline that regresses (an injected
# +3% of GPU work, 4 points): the script must render it (vitcore report exits 1 there) and not call it failed
SMALL = "reports/h100-noise/2026-11-24-531e213/all-1"
REGRESSING = "reports/h100-gate/2026-11-25-e78dfbd/inject-device"


def tracked(under: str = "reports") -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", under], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked tree cannot be listed")
    return [f for f in out.stdout.decode().split("\0") if f]


def tracked_size(files, root: Path = ROOT) -> int:
    """Bytes of the listed files as they are in the working tree (a tracked file deleted there counts 0)."""
    return sum((root / f).stat().st_size for f in files if (root / f).is_file())


def committed_views(files) -> list[str]:
    """Listed files that `vitcore report` generates, beside a listed points.jsonl (the run they render)."""
    runs = {os.path.dirname(f) for f in files if os.path.basename(f) == "points.jsonl"}
    return sorted(f for f in files if os.path.basename(f) in VIEWS and os.path.dirname(f) in runs)


def test_reports_tree_is_under_5_mb():
    files = tracked()
    size = tracked_size(files)
    biggest = sorted(files, key=lambda f: -tracked_size([f]))[:5]
    assert size < LIMIT_BYTES, (f"reports/ tracks {size:,} bytes in {len(files)} files (limit {LIMIT_BYTES:,}); "
                                f"largest: {biggest}. Commit evidence only, gzip large logs (reports/README.md)")


def test_no_generated_view_is_committed():
    assert committed_views(tracked()) == [], \
        "views vitcore report generates are committed: git rm them; bash scripts/render_reports.sh renders them"


def test_the_checks_catch_a_big_tree_and_a_committed_view(tmp_path):
    """The two checks themselves, on a made-up tree: a view beside its points.jsonl is found, the same
    name elsewhere (a mutation run's summary.md) is evidence; sizes add up."""
    files = ["r/a/points.jsonl", "r/a/report.html", "r/a/summary.md", "r/a/bench.log", "r/m/summary.md"]
    assert committed_views(files) == ["r/a/report.html", "r/a/summary.md"]
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r/a/points.jsonl").write_bytes(b"x" * 3_000_000)
    (tmp_path / "r/a/report.html").write_bytes(b"x" * 2_500_000)
    assert tracked_size(files, tmp_path) == 5_500_000 > LIMIT_BYTES


def test_every_baseline_the_script_names_is_committed():
    """scripts/render_reports.sh renders checks against baselines named by path: each must be tracked."""
    named = set(re.findall(r"reports/[\w./-]+/points\.jsonl", SCRIPT.read_text()))
    assert named, "the script names no baseline: the pattern above is out of date"
    assert named <= set(tracked()), f"baselines not in the tree: {sorted(named - set(tracked()))}"


def render(dest, *runs, python=sys.executable, timeout=120):
    env = {**os.environ, "PYTHON": python, "JOBS": "2"}
    return subprocess.run(["bash", str(SCRIPT), str(dest), *runs], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_render_script_renders_committed_runs(tmp_path):
    """One command, two committed runs, into tmp_path (never into the committed tree): each gets its
    report.html and the other views, and a regression verdict is rendered, not a failure."""
    pytest.importorskip("matplotlib")  # the PNGs; the tox env has it
    proc = render(tmp_path / "views", SMALL, REGRESSING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for run in (SMALL, REGRESSING):
        out = tmp_path / "views" / run.removeprefix("reports/")
        written = {p.name for p in out.iterdir()}
        assert "report.html" in written and (out / "report.html").stat().st_size > 10_000, written
        assert written - RENDER_LOGS == VIEWS, f"vitcore report's views changed: update VIEWS ({written})"
    assert "REGRESSIONS against" in (tmp_path / "views" / REGRESSING.removeprefix("reports/") / "render.log").read_text()


def test_render_script_fails_naming_the_run(tmp_path):
    """A run that does not render (here: an interpreter that fails at once) is exit 1 with its folder named,
    as is a folder that holds no run."""
    proc = render(tmp_path / "views", SMALL, "reports/no-such-run", python="false", timeout=30)
    assert proc.returncode == 1
    assert f"FAILED {SMALL}" in proc.stderr and "FAILED reports/no-such-run" in proc.stderr, proc.stderr


def test_render_script_refuses_the_committed_tree():
    proc = render(ROOT / "reports", SMALL, python="false", timeout=30)
    assert proc.returncode == 2 and "must not be reports/" in proc.stderr, proc.stderr
