import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.made_up import RUN, run_folder, run_point
from vitcore import files
from vitcore.measure.timing import Timing, host_noise, timed
from vitcore.store import results
from vitcore.store.results import ResultsError


def test_append_is_line_atomic_and_a_torn_line_is_named_never_trusted(tmp_path):
    path = tmp_path / "points.jsonl"
    results.append_point(path, run_point(1))
    results.append_point(path, run_point(2))
    with open(path, "a") as f:
        f.write('{"plugin": "torch_ddp", "trunc')  # a write cut off by a crash
    good, bad = results.read(path)
    assert [p["batch_size"] for p in good] == [1, 2]
    assert [str(b) for b in bad] == [f"{path}:3: torn last line (a write cut off at column 25, by a crash mid-write)"]


def test_a_point_appended_after_a_torn_line_stays_whole(tmp_path):
    # the case: --resume appended onto the partial line, which then held two objects
    path = tmp_path / "points.jsonl"
    results.append_point(path, run_point(1))
    with open(path, "a") as f:
        f.write('{"plugin": "torch_ddp", "batch_')
    results.append_point(path, run_point(2))
    good, bad = results.read(path)
    assert [p["batch_size"] for p in good] == [1, 2] and [b.line for b in bad] == [2]


def test_foreign_lines_are_named_by_file_and_line(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_text("\n".join([json.dumps(run_point(1)), "42", "garbage", '{"a": 1}', json.dumps(run_point(2))]) + "\n")
    good, bad = results.read(path)
    assert len(good) == 2
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [
        (2, "JSON int '42' is not a point"), (3, "not JSON (Expecting value, column 1)"), (4, "JSON object without a 'plugin' field is not a point")]
    with pytest.raises(ResultsError, match=rf"^{path}:2: JSON int '42' is not a point \(and 2 more\); "
                                           r"`vitcore report --skip-bad` reports the rest$"):
        results.load(path)
    assert len(results.load(path, skip_bad=True)) == 2


@pytest.mark.parametrize("name,content,needle", [
    ("missing.jsonl", None, "results file '{p}' does not exist"),
    ("missing.json", None, "results file '{p}' does not exist"),
    ("bad.json", '{"results": [', "{p}:1: not valid JSON (Expecting value)"),
    ("scalar.json", "42", "{p}: JSON int without a list of points"),
    ("items.json", '[{"plugin": "x"}, 7]', "{p}:0: item 0: point missing precision, profile, batch_size, status"),
    ("empty.jsonl", "", "results file '{p}' holds no points"),
    ("empty.json", "[]", "results file '{p}' holds no points"),
])
def test_unreadable_results_files_are_one_line_errors_naming_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError) as e:
        results.load(path)
    assert needle.format(p=path) in str(e.value) and "\n" not in str(e.value)


def test_prepare_resume_sets_aside_bad_lines_and_failed_points(tmp_path):
    path = tmp_path / "points.jsonl"
    for p in (run_point(1), run_point(2, "error", error="WorkerError: timed out after 9s"), run_point(4, "oom")):
        results.append_point(path, p)
    with open(path, "a") as f:
        f.write("42\n{\"plugin\": \"torch_ddp\", \"tru")
    before = path.read_text().splitlines()
    assert results.finished_keys(path) == {results.points.key(run_point(1)), results.points.key(run_point(4))}
    bad, retried = results.prepare_resume(path)
    assert [b.line for b in bad] == [4, 5] and [p["batch_size"] for p in retried] == [2]
    assert path.read_text().splitlines() == [before[0], before[2]]  # finished points kept byte for byte
    set_aside = [json.loads(x) for x in (tmp_path / "points.jsonl.bad").read_text().splitlines()]
    assert [(x["line"], x["text"]) for x in set_aside] == [(4, "42"), (5, '{"plugin": "torch_ddp", "tru')]
    assert results.read_points(tmp_path / "points.jsonl.retried")[0]["batch_size"] == 2
    assert results.prepare_resume(path) == ([], [])  # nothing left to set aside


HOLDER = """import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "since": "then"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(results.fcntl is None, reason="the --out lock needs fcntl (POSIX)")
def test_out_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    lock = tmp_path / results.LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsError, match=rf"--out '{tmp_path}' is in use by another vitcore run "
                                               rf"\(pid {holder.pid}, since then\)"):
            results.lock_out(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its pid stays in the file, the kernel released the flock
    note = results.lock_out(tmp_path)
    assert note == f"took over the lock of {tmp_path} from pid {holder.pid}, since then, which ended without releasing it"
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert results.lock_out(tmp_path) is None  # re-entrant in one process
    results.unlock_out(tmp_path)
    assert not lock.exists()


def test_cache_dir_is_the_users_never_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("VITCORE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert files.cache_dir("logs") == tmp_path / "vitcore" / "logs"
    monkeypatch.setenv("VITCORE_CACHE_DIR", str(tmp_path / "c"))
    assert files.cache_dir() == tmp_path / "c"


def test_write_atomic_leaves_no_temp_files(tmp_path):
    files.write_json(tmp_path / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_calibration_lengthens_windows_of_fast_steps_only():
    def step(_):
        time.sleep(0.002)

    run = timed(step, None, Timing(warmup=1, steps=3, repeats=2, min_window_s=0.05), "cpu", freeze_gc=False)
    # 0.05 s of ~2 ms steps: many more than 3 steps; sleep overshoots on a loaded 2-core machine (seen:
    # 3.3 ms), so the bound is on the calibration itself, not on sleep's accuracy
    assert run.steps > 3 * 3 and all(w >= 0.02 for w in run.windows)
    run = timed(step, None, Timing(warmup=1, steps=3, repeats=2), "cpu", freeze_gc=False)
    assert run.steps == 3  # no minimum: exactly --steps


def test_each_window_records_host_interference():
    # the hypervisor took 30 of 1,000 jiffies; 4 involuntary switches; the thread moved from CPU 2 to 5
    before = {"steal": 100, "jiffies": 10_000, "preempted": 7, "cpu": 2, "gc_s": 1.0, "thread_s": 3.0}
    after = {"steal": 130, "jiffies": 11_000, "preempted": 11, "cpu": 5, "gc_s": 1.25, "thread_s": 3.5}
    assert host_noise(before, after) == {"steal": 0.03, "preempted": 4, "migrated": True, "gc_s": 0.25, "thread_s": 0.5}
    assert host_noise(None, None) == {}  # not Linux: nothing claimed
    def garbage(_):  # reference cycles: only the collector frees them
        for _ in range(3000):
            a = []
            a.append(a)

    run = timed(garbage, None, Timing(warmup=1, steps=3, repeats=3), "cpu", freeze_gc=False)
    windows, noise = run.windows, run.noise
    assert len(noise) == 3
    if sys.platform == "linux":
        assert all(0.0 <= n["steal"] <= 1.0 and n["preempted"] >= 0 for n in noise)
        assert all(0 < n["thread_s"] <= w * 1.05 + 0.01 for n, w in zip(noise, windows, strict=True))
        assert sum(n["gc_s"] for n in noise) > 0  # automatic collections ran inside the windows, and were timed


@pytest.mark.parametrize("change,why", [
    ({"code": "def456"}, "its points were measured by code abc123 (2026-11-25T10:00:00+00:00); this is def456"),
    ({"settings": RUN["settings"] | {"steps": 3}}, "were measured with other settings: steps 20 then, 3 now"),
    ({"settings": RUN["settings"] | {"min_window_s": 0.0, "model": "vit-base"}},
     "min_window_s 1.0 then, 0.0 now; model 'vit-tiny' then, 'vit-base' now"),
])
def test_resume_reuses_only_the_same_code_and_settings(tmp_path, change, why):
    out = run_folder(tmp_path)
    assert results.reuse_decision(out, RUN) == (True, f"reusing 1 point from {out} (abc123, 2026-11-25T10:00:00+00:00)")
    reuse, line = results.reuse_decision(out, RUN | change)
    assert not reuse and why in line and "\n" not in line


def test_resume_without_a_run_record_starts_fresh_and_keeps_the_old_points_aside(tmp_path):
    out = run_folder(tmp_path, run=None)
    before = (out / "points.jsonl").read_text()
    assert results.reuse_decision(out, RUN) == (False, f"{out} has no run.json naming the code and settings that "
                                                       "measured its points")
    stale = results.start_fresh(out)
    assert stale == out / "points.jsonl.stale" and stale.read_text() == before and not (out / "points.jsonl").exists()
    assert results.reuse_decision(out, RUN) == (True, "")  # nothing left to reuse


TINY = [sys.executable, "-m", "vitcore.cli", "bench", "--device", "cpu", "--model", "vit-tiny", "--plugins",
        "torch_ddp", "--batch-sizes", "4", "--steps", "2", "--repeats", "2", "--warmup", "1", "--min-window", "0",
        "--no-reference"]


def _bench(out, sha, *extra):
    p = subprocess.run(TINY + ["--out", str(out), *extra], capture_output=True, text=True, timeout=600,
                       env=os.environ | {"VITCORE_GIT_SHA": sha})
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stderr, results.read_points(out / "points.jsonl")


@pytest.mark.slow
def test_resume_at_another_sha_measures_again(tmp_path):
    out = tmp_path / "b"
    _, first = _bench(out, "aaaa111")
    err, again = _bench(out, "aaaa111", "--resume")
    date = json.loads((out / results.RUN_NAME).read_text())["date"]
    assert f"[vitcore] reusing 1 point from {out} (aaaa111, {date})" in err
    assert again == first and "[1/" not in err  # nothing measured
    err, fresh = _bench(out, "bbbb222", "--resume")
    assert (f"[vitcore] --resume: starting fresh: its points were measured by code aaaa111 ({date}); this is "
            f"bbbb222 (old points moved to {out}/points.jsonl.stale)") in err
    assert "[1/1] torch_ddp fp32 bs4: " in err
    assert [p["git_sha"] for p in fresh] == ["bbbb222"] and fresh[0]["date"] != first[0]["date"]
    assert results.read_points(out / "points.jsonl.stale") == first
    err, _ = _bench(out, "bbbb222", "--resume", "--steps", "3")
    assert "starting fresh: its points (bbbb222, " in err and "steps 2 then, 3 now" in err


def test_injected_host_regression_sleeps_its_share_of_the_measured_step():
    """--inject-host-pct (issue 13 d): the step is timed first, then each call sleeps that share of it
    after the step; the label states the amount; GPU work needs CUDA and says so in one line."""
    from vitcore import VitcoreError
    from vitcore.measure.profiling import injected

    calls = []

    def step(b):
        calls.append(b)
        time.sleep(0.02)
        return b

    assert injected(step, 1, 0, 0, "cpu") == (step, "")
    slowed, label = injected(step, 1, 0, 50, "cpu")
    ms = float(label.split("(")[1].split(" ms")[0])
    assert label.startswith("host+50% (") and 9.0 <= ms <= 100.0, label  # half of a >= 20 ms step (a loaded host adds)
    t0 = time.perf_counter()
    assert slowed(7) == 7 and calls[-1] == 7
    assert time.perf_counter() - t0 >= 0.02 + ms / 1e3
    with pytest.raises(VitcoreError, match="--inject-device-pct needs a CUDA device"):
        injected(step, 1, 3, 0, "cpu")
