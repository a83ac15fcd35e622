"""Results files at their edges: exact messages, permissions and byte-stable text, atomic writes,
resume set-asides, the run lock and the cache folder (issue 18: the mutation survivors of results.py).
The everyday behaviour is in test_results.py."""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.made_up import RUN, run_folder, run_point
from vitcore import files
from vitcore.store import results
from vitcore.store.results import ResultsError

# --- what a user reads and what is left on disk (issue 18: mutation survivors of results.py) ----------------
LIST_HINT = 'a .json results file holds a list of points or {"results": [...]}'
KIND_HINT = "give a points.jsonl, points.json or gpu-results.json(l) file"


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_writers_make_missing_folders_and_files_everyone_can_read(tmp_path, umask022):
    jsonl, js = tmp_path / "a" / "b" / "points.jsonl", tmp_path / "c" / "d" / "run.json"
    results.append_point(jsonl, run_point(1))
    files.write_json(js, {"k": 1})
    # 0644 as for any file a user shares: mkstemp's 0600 would hide results from other users
    assert [p.stat().st_mode & 0o777 for p in (jsonl, js)] == [0o644, 0o644]
    if results.fcntl is not None:
        results.lock_out(tmp_path / "e" / "f")
        try:
            assert (tmp_path / "e" / "f" / results.LOCK_NAME).stat().st_mode & 0o777 == 0o644
        finally:
            results.unlock_out(tmp_path / "e" / "f")


def test_written_files_are_byte_stable_text(tmp_path):
    # the same point or record is the same bytes whatever the key order: resumed runs and diffs of
    # committed points compare lines, and run.json is meant to be read by a person
    path = tmp_path / "points.jsonl"
    results.append_point(path, {"status": "ok", "plugin": "gemini", "batch_size": 8})
    assert path.read_text() == '{"batch_size": 8, "plugin": "gemini", "status": "ok"}\n'
    files.write_json(tmp_path / "run.json", {"settings": {"steps": 2, "model": "vit-tiny"}, "code": "abc"})
    assert (tmp_path / "run.json").read_text() == (
        '{\n  "code": "abc",\n  "settings": {\n    "model": "vit-tiny",\n    "steps": 2\n  }\n}\n')


def test_atomic_write_goes_through_a_hidden_temp_file_beside_the_target(tmp_path, monkeypatch):
    # beside it: os.replace is atomic only within one file system; hidden: a glob of *.json never
    # picks up a half-written file
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files.write_json(tmp_path / "run.json", {"k": 1})
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(".run.json.")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    files.write_json(target, {"old": True})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        files.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_line_that_is_not_text_is_named_and_kept_as_replacement_text(tmp_path):
    path = tmp_path / "points.jsonl"
    long_list = json.dumps(list(range(30)))
    path.write_bytes(json.dumps(run_point(1)).encode() + b"\n\xff\xfe{\n" + long_list.encode() + b"\n")
    good, bad = results.read(path)
    assert len(good) == 1
    assert [(b.line, b.reason, b.text) for b in bad] == [
        (2, "not UTF-8 text", "\ufffd\ufffd{"),
        (3, f"JSON list {long_list[:40]!r} is not a point", long_list)]


def test_load_names_a_folder_and_a_missing_file_with_the_forms_it_takes(tmp_path):
    with pytest.raises(ResultsError) as e:
        results.load(tmp_path)
    assert str(e.value) == f"results file {str(tmp_path)!r} is a folder; {KIND_HINT}"
    with pytest.raises(ResultsError) as e:
        results.load(tmp_path / "points.jsonl")
    assert str(e.value) == f"results file {str(tmp_path / 'points.jsonl')!r} does not exist; {KIND_HINT}"


def test_load_counts_the_other_bad_lines_and_skip_bad_names_each_on_stderr(tmp_path, capsys):
    path = tmp_path / "points.jsonl"
    path.write_text("\n".join([json.dumps(run_point(1)), "42", json.dumps(run_point(2))]) + "\n")
    with pytest.raises(ResultsError) as e:
        results.load(path)
    assert str(e.value) == f"{path}:2: JSON int '42' is not a point; `vitcore report --skip-bad` reports the rest"
    with open(path, "a") as f:
        f.write("[]\n")
    with pytest.raises(ResultsError) as e:
        results.load(path)
    assert str(e.value) == (f"{path}:2: JSON int '42' is not a point (and 1 more); "
                            "`vitcore report --skip-bad` reports the rest")
    capsys.readouterr()
    assert [p["batch_size"] for p in results.load(path, skip_bad=True)] == [1, 2]
    out, err = capsys.readouterr()
    assert out == "" and err == (f"[vitcore] skipped {path}:2: JSON int '42' is not a point\n"
                                 f"[vitcore] skipped {path}:4: JSON list '[]' is not a point\n")


def test_a_gzipped_results_file_loads_the_same_points_and_a_broken_one_is_named(tmp_path):
    import gzip

    plain = tmp_path / "gpu-results.jsonl"
    plain.write_text("".join(json.dumps(run_point(b)) + "\n" for b in (8, 16)))
    packed = tmp_path / "gpu-results.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert results.load(packed) == results.load(plain) and len(results.load(packed)) == 2
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(results.ResultsError, match=r"cut.jsonl.gz: not a whole gzip file"):
        results.load(cut)
    (tmp_path / "plain.json.gz").write_bytes(gzip.compress(json.dumps({"results": [run_point(8)]}).encode()))
    assert results.load(tmp_path / "plain.json.gz") == results.load(plain)[:1]


def test_json_results_files_exact_messages_and_forms(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": [')
    with pytest.raises(ResultsError) as e:
        results.load(bad)
    assert str(e.value) == f"{bad}:1: not valid JSON (Expecting value); {LIST_HINT}"
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff[]")
    with pytest.raises(ResultsError) as e:
        results.load(binary)  # no line to name: the file, and the decoder's own words
    assert str(e.value) == (f"{binary}: not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: "
                            f"invalid start byte); {LIST_HINT}")
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"rows": []}')
    with pytest.raises(ResultsError) as e:
        results.load(scalar)
    assert str(e.value) == f"{scalar}: JSON dict without a list of points; {LIST_HINT}"
    gpu = tmp_path / "gpu-results.json"
    gpu.write_text(json.dumps({"results": [run_point(1), {"no": "plugin", "x": "y" * 50}, run_point(2)]}))
    with pytest.raises(ResultsError) as e:
        results.load(gpu)
    item = json.dumps({"no": "plugin", "x": "y" * 50})
    assert str(e.value) == f"{gpu}:1: item 1 ({item[:40]}) is not a point; `vitcore report --skip-bad` reports the rest"
    assert [p["batch_size"] for p in results.load(gpu, skip_bad=True)] == [1, 2]
    listed = tmp_path / "points.json"
    listed.write_text(json.dumps([run_point(4)]))
    assert results.load(listed) == [run_point(4)]


def test_prepare_resume_records_each_set_aside_line_whole(tmp_path):
    path = tmp_path / "points.jsonl"
    results.append_point(path, run_point(1))
    with open(path, "a") as f:
        f.write('[1]\n{"plugin": "torch_ddp", "ba\n')  # a torn line that is no longer the last one
    results.append_point(path, run_point(2))
    with open(path, "ab") as f:
        f.write(b"\xff\xfe\n")  # bytes that are not text: set aside, not a crash of the resumed run
    results.append_point(path, run_point(3))
    with open(path, "a") as f:
        f.write('{"plugin": "x", "tor')  # the last line, cut off by a crash
    bad, retried = results.prepare_resume(path)
    assert retried == []
    set_aside = [json.loads(x) for x in (tmp_path / "points.jsonl.bad").read_text().splitlines()]
    assert set_aside == [
        {"file": str(path), "line": 2, "reason": "JSON list '[1]' is not a point", "text": "[1]"},
        {"file": str(path), "line": 3, "reason": "not JSON (Unterminated string starting at, column 25)",
         "text": '{"plugin": "torch_ddp", "ba'},
        {"file": str(path), "line": 5, "reason": "not UTF-8 text", "text": "\ufffd\ufffd"},
        {"file": str(path), "line": 7, "reason": "torn last line (a write cut off at column 17, by a crash mid-write)",
         "text": '{"plugin": "x", "tor'}]
    assert [str(b) for b in bad] == [f"{x['file']}:{x['line']}: {x['reason']}" for x in set_aside]
    assert results.read(path) == ([run_point(1), run_point(2), run_point(3)], [])


@pytest.mark.parametrize("tail,bad_lines,retried", [
    ("42\n", [2], []),  # a bad line, the file ending in a newline
    (json.dumps(run_point(2, "error")) + "\n", [], [2]),  # only a failed point to measure again
])
def test_prepare_resume_sets_aside_whatever_the_file_ends_with(tmp_path, tail, bad_lines, retried):
    path = tmp_path / "points.jsonl"
    results.append_point(path, run_point(1))
    with open(path, "a") as f:
        f.write(tail)
    bad, again = results.prepare_resume(path)
    assert [b.line for b in bad] == bad_lines and [p["batch_size"] for p in again] == retried
    assert path.read_text() == json.dumps(run_point(1), sort_keys=True) + "\n"


def test_prepare_resume_leaves_a_clean_file_alone_and_ends_an_unterminated_one(tmp_path):
    path = tmp_path / "points.jsonl"
    results.append_point(path, run_point(1))
    before = path.stat()
    assert results.prepare_resume(path) == ([], [])
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.jsonl"]
    path.write_text(json.dumps(run_point(1)))  # a whole point without its newline
    assert results.prepare_resume(path) == ([], [])
    assert path.read_text() == json.dumps(run_point(1)) + "\n"


def test_reuse_decision_names_a_broken_record_dirty_code_and_counts_points(tmp_path):
    out = run_folder(tmp_path)
    (out / results.RUN_NAME).write_text("{not json")
    assert results.reuse_decision(out, RUN) == (False, f"{out / results.RUN_NAME} is not a vitcore run record")
    (out / results.RUN_NAME).write_text(json.dumps({"code": "abc123"}))
    assert results.reuse_decision(out, RUN) == (False, f"{out / results.RUN_NAME} is not a vitcore run record")
    dirty = RUN | {"code": "abc123-dirty"}
    files.write_json(out / results.RUN_NAME, dirty)
    results.append_point(out / "points.jsonl", run_point(32, "oom"))
    assert results.reuse_decision(out, dirty) == (
        True, f"reusing 2 points from {out} (abc123-dirty, {RUN['date']}; uncommitted edits are not compared)")


CHILD_LOCK = """import sys
from vitcore.store import results
print(results.lock_out(sys.argv[1]), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(results.fcntl is None, reason="the --out lock needs fcntl (POSIX)")
def test_a_second_run_is_told_who_holds_the_lock_and_a_clean_exit_releases_it(tmp_path):
    out = tmp_path / "a" / "out"  # --out folders that do not exist yet are made
    env = os.environ | {"PYTHONPATH": str(Path(results.__file__).parents[2])}  # vitcore/store/results.py -> the checkout
    child = subprocess.Popen([sys.executable, "-c", CHILD_LOCK, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "None"
        record = json.loads((out / results.LOCK_NAME).read_text())
        assert record["pid"] == child.pid and record["argv"] == ["-c", str(out)]
        assert abs(datetime.datetime.fromisoformat(record["since"]) - datetime.datetime.now()).total_seconds() < 120
        assert len(record["since"]) == len("2026-11-25T10:00:00")  # to the second
        with pytest.raises(ResultsError) as e:
            results.lock_out(out)
        assert str(e.value) == (f"--out {str(out)!r} is in use by another vitcore run (pid {child.pid}, since "
                                f"{record['since']}); wait for it to end or choose another --out")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
    assert not (out / results.LOCK_NAME).exists()  # released at exit, not left for the next run to take over
    assert results.lock_out(out) is None
    results.unlock_out(out)


SILENT_HOLDER = """import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(results.fcntl is None, reason="the --out lock needs fcntl (POSIX)")
def test_a_holder_that_wrote_nothing_is_pid_unknown_and_no_takeover_is_claimed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", SILENT_HOLDER, str(tmp_path / results.LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsError) as e:
            results.lock_out(tmp_path)
        assert str(e.value) == (f"--out {str(tmp_path)!r} is in use by another vitcore run (pid unknown); "
                                "wait for it to end or choose another --out")
    finally:
        holder.kill()
        holder.wait()
    assert results.lock_out(tmp_path) is None  # an empty lock file names no one to take over from
    results.unlock_out(tmp_path)


@pytest.mark.skipif(results.fcntl is None, reason="the --out lock needs fcntl (POSIX)")
def test_the_lock_follows_a_lock_file_replaced_while_locking(tmp_path, monkeypatch):
    # the holder ends (removing its lock file) and another run makes a new one between our open and
    # our flock: the lock taken must be on the file that is there, or two runs would share --out
    lock = tmp_path / results.LOCK_NAME
    real = results.fcntl
    calls = []

    def flock(fd, op):
        real.flock(fd, op)
        if not calls:
            lock.unlink()
            lock.write_text("")
        calls.append(fd)

    monkeypatch.setattr(results, "fcntl", SimpleNamespace(flock=flock, LOCK_EX=real.LOCK_EX, LOCK_NB=real.LOCK_NB))
    try:
        assert results.lock_out(tmp_path) is None
        assert len(calls) == 2 and json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        results.unlock_out(tmp_path)


@pytest.mark.skipif(results.fcntl is None, reason="the --out lock needs fcntl (POSIX)")
def test_unlock_is_safe_for_a_folder_never_locked_or_a_lock_file_already_gone(tmp_path):
    results.unlock_out(tmp_path / "never")
    results.lock_out(tmp_path)
    (tmp_path / results.LOCK_NAME).unlink()  # e.g. the user cleaned the folder during the run
    results.unlock_out(tmp_path)
    assert results.lock_out(tmp_path) is None  # released: the folder can be locked again
    results.unlock_out(tmp_path)


def test_cache_dir_defaults_to_dot_cache_in_home(monkeypatch, tmp_path):
    for var in ("VITCORE_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.cache_dir("datasets") == tmp_path / ".cache" / "vitcore" / "datasets"
