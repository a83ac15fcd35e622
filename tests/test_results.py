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
