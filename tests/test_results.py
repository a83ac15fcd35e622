import json

from vitcore import results


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
    import time

    from vitcore.bench import Timing, _timed

    def step(_):
        time.sleep(0.002)

    windows, _, steps, _, _ = _timed(step, None, Timing(warmup=1, steps=3, repeats=2, min_window_s=0.05), "cpu",
                                  freeze_gc=False)
    assert steps >= 20 and all(w >= 0.04 for w in windows)  # 0.05 s of 2 ms steps
    _, _, steps, _, _ = _timed(step, None, Timing(warmup=1, steps=3, repeats=2), "cpu", freeze_gc=False)
    assert steps == 3  # no minimum: exactly --steps


def test_each_window_records_host_interference():
    import sys

    from vitcore.bench import Timing, _timed, host_noise

    # the hypervisor took 30 of 1,000 jiffies; 4 involuntary switches; the thread moved from CPU 2 to 5
    assert host_noise((100.0, 10_000.0, 7, 2), (130.0, 11_000.0, 11, 5)) == {
        "steal": 0.03, "preempted": 4, "migrated": True}
    assert host_noise(None, None) == {}  # not Linux: nothing claimed
    _, _, _, _, noise = _timed(lambda _: sum(range(10_000)), None, Timing(warmup=1, steps=3, repeats=3), "cpu",
                               freeze_gc=False)
    assert len(noise) == 3
    if sys.platform == "linux":
        assert all(0.0 <= n["steal"] <= 1.0 and n["preempted"] >= 0 for n in noise)
