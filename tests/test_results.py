import json
import sys
import time

from vitcore import results
from vitcore.timing import Timing, host_noise, timed


def test_append_is_line_atomic_and_partial_lines_are_ignored(tmp_path):
    path = tmp_path / "points.jsonl"
    results.append_point(path, {"a": 1})
    results.append_point(path, {"a": 2})
    with open(path, "a") as f:
        f.write('{"a": 3, "trunc')  # a write cut off by a crash
    assert results.read_points(path) == [{"a": 1}, {"a": 2}]


def test_write_atomic_leaves_no_temp_files(tmp_path):
    results.write_json(tmp_path / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_calibration_lengthens_windows_of_fast_steps_only():
    def step(_):
        time.sleep(0.002)

    windows, _, steps, _, _ = timed(step, None, Timing(warmup=1, steps=3, repeats=2, min_window_s=0.05), "cpu",
                                 freeze_gc=False)
    assert steps >= 20 and all(w >= 0.04 for w in windows)  # 0.05 s of 2 ms steps
    _, _, steps, _, _ = timed(step, None, Timing(warmup=1, steps=3, repeats=2), "cpu", freeze_gc=False)
    assert steps == 3  # no minimum: exactly --steps


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

    windows, _, _, _, noise = timed(garbage, None, Timing(warmup=1, steps=3, repeats=3), "cpu", freeze_gc=False)
    assert len(noise) == 3
    if sys.platform == "linux":
        assert all(0.0 <= n["steal"] <= 1.0 and n["preempted"] >= 0 for n in noise)
        assert all(0 < n["thread_s"] <= w * 1.05 + 0.01 for n, w in zip(noise, windows, strict=True))
        assert sum(n["gc_s"] for n in noise) > 0  # automatic collections ran inside the windows, and were timed
