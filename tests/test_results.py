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

    windows, _, steps, _ = _timed(step, None, Timing(warmup=1, steps=3, repeats=2, min_window_s=0.05), "cpu",
                               freeze_gc=False)
    assert steps >= 20 and all(w >= 0.04 for w in windows)  # 0.05 s of 2 ms steps
    _, _, steps, _ = _timed(step, None, Timing(warmup=1, steps=3, repeats=2), "cpu", freeze_gc=False)
    assert steps == 3  # no minimum: exactly --steps
