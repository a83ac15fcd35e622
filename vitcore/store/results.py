"""Result files: append-only JSON lines (one finished point per line), what a resumed run keeps, and
the lock that keeps two runs out of one `--out` folder (atomic writes: vitcore.files).

A point is appended with one write() on an O_APPEND descriptor and fsync'd, so a crash or Ctrl-C
keeps every finished point. A crash in the middle of that write can still leave a torn last line:
`read` names every line that is not a point by file:line, `load` refuses a file that holds one
unless told to skip it, `prepare_resume` sets such lines aside in `<file>.bad` before a resumed run
appends, and `append_point` never glues a point onto a torn line.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vitcore import VitcoreError
from vitcore.files import write_atomic_bytes
from vitcore.spec import points

try:
    import fcntl
except ImportError:  # not a POSIX system: no --out lock
    fcntl = None

POINT_FIELD = "plugin"  # every point (bench or GPU-tier row) names its plugin; a line without it is foreign
FINISHED = ("ok", "oom")  # an OOM is a result; an "error" (a crash or a timeout) is measured again on --resume
LOCK_NAME = ".vitcore.lock"


class ResultsError(VitcoreError):
    """A results file is missing, unreadable or holds lines that are not points."""


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


# --- writing ----------------------------------------------------------------------------------------
def append_point(path, point: dict) -> None:
    """Append one point as one whole line, fsync'd. Where the file ends in a torn line (a crash in
    the middle of a write), the point starts on a line of its own instead of completing it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(point, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------------------
def _parse(raw: bytes, last: bool) -> tuple[dict | None, str | None]:
    """A line's point, or why it is not one."""
    try:
        obj = json.loads(raw.decode())
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as e:
        if last:
            return None, f"torn last line (a write cut off at column {e.colno}, by a crash mid-write)"
        return None, f"not JSON ({e.msg}, column {e.colno})"
    if not isinstance(obj, dict):
        return None, f"JSON {type(obj).__name__} {raw.decode()[:40]!r} is not a point"
    if POINT_FIELD not in obj:
        return None, f"JSON object without a {POINT_FIELD!r} field is not a point"
    return obj, None


def _bytes(path: Path) -> bytes:
    """The file's bytes; a committed `.gz` (reports/ gzips its large files) read through."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut-off file an EOFError
        raise ResultsError(f"{path}: not a whole gzip file ({e})") from None


def _lines(path: Path) -> list[tuple[int, bytes, bool]]:
    """(line number, raw bytes, is the last line) of every non-blank line."""
    data = _bytes(path)
    raw = data.split(b"\n")
    return [(i + 1, r, i == len(raw) - 1) for i, r in enumerate(raw) if r.strip()]


def read(path) -> tuple[list[dict], list[BadLine]]:
    """The points of a JSON-lines file and every line that is not one, named by file:line.
    A missing file holds nothing."""
    good, bad = _read_numbered(path)
    return [obj for _, obj in good], bad


def _read_numbered(path) -> tuple[list[tuple[int, dict]], list[BadLine]]:
    path = Path(path)
    if not path.exists():
        return [], []
    good, bad = [], []
    for n, raw, last in _lines(path):
        obj, why = _parse(raw, last)
        if why:
            bad.append(BadLine(str(path), n, why, raw.decode(errors="replace")))
        else:
            good.append((n, obj))
    return good, bad


# What `load` requires of a throughput point, beyond its plugin: the identity fields the schema gives
# no default (those with one were added later, and older points lack them), its status, and the device
# fields points.device_key reads: torch's version by value; gpu_name, gpu_count and cuda by name (null
# on a CPU, but every point the suite writes has them). A report of {"plugin": "torch_ddp"} used to
# exit 0 with an empty report. GPU-tier correctness rows are keyed by (plugin, precision) alone.
DEVICE_VALUES = ("torch",)
DEVICE_NAMES = ("gpu_name", "gpu_count", "cuda")
CORRECTNESS_FIELDS = ("precision",)


def required_fields() -> list[str]:
    """The fields a throughput point must hold a value for (read from the schema when called, so a
    registered identity field counts)."""
    return [f.name for f in points.FIELDS if f.identity and f.default is None and f.name != POINT_FIELD] + \
        ["status", *DEVICE_VALUES]


def missing_fields(p: dict) -> list[str]:
    """The fields that identify `p` which it lacks, in schema order (empty: a whole point)."""
    if p.get("test", "performance") != "performance":
        return [k for k in CORRECTNESS_FIELDS if p.get(k) is None]
    return [k for k in required_fields() if p.get(k) is None] + [k for k in DEVICE_NAMES if k not in p]


def _whole(rows: list[tuple[int, dict]], path: Path, items: bool) -> tuple[list[dict], list[BadLine]]:
    """(the points that name what they measured and where, a BadLine for each that does not)."""
    good, bad = [], []
    for n, p in rows:
        miss = missing_fields(p)
        if miss:
            what = f"item {n}: point" if items else "point"  # a .json file's items are counted from 0
            bad.append(BadLine(str(path), n, f"{what} missing {', '.join(miss)} (the fields that identify it)",
                               json.dumps(p)))
        else:
            good.append(p)
    return good, bad


def read_points(path) -> list[dict]:
    """The points of a JSON-lines file (a run in progress reads its own file with this); lines that
    are not points are left out here, and named by `read`, `load` and `prepare_resume`."""
    return read(path)[0]


def finished_keys(path) -> set[tuple]:
    """Identity keys (points.key) of the points --resume keeps: ok and OOM, not error or timeout."""
    return {points.key(p) for p in read_points(path) if p.get("status") in FINISHED}


def load(path, *, skip_bad: bool = False) -> list[dict]:
    """Points from a points.jsonl, a gpu-results.json ({"results": [...]}) or a JSON list. A missing
    file, invalid JSON, a line or item that is not a point or lacks the fields that identify it
    (missing_fields), or no point at all is a ResultsError naming the file (and line); skip_bad:
    leave such lines out, each named on stderr."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ResultsError(f"results file {str(path)!r} {what}; give a points.jsonl, points.json or "
                           "gpu-results.json(l) file")
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        numbered, bad = _read_numbered(path)
        rows, partial = _whole(numbered, path, items=False)
    else:
        numbered, bad = _load_json(path)
        rows, partial = _whole(numbered, path, items=True)
    bad = sorted(bad + partial, key=lambda b: b.line)
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ResultsError(f"{bad[0]}{more}; `vitcore report --skip-bad` reports the rest")
    for b in bad:
        print(f"[vitcore] skipped {b}", file=sys.stderr)
    if not rows:
        raise ResultsError(f"results file {str(path)!r} holds no points")
    return rows


def _load_json(path: Path) -> tuple[list[tuple[int, dict]], list[BadLine]]:
    try:
        data = json.loads(_bytes(path).decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else str(path)
        raise ResultsError(f"{where}: not valid JSON ({getattr(e, 'msg', e)}); a .json results file holds a "
                           'list of points or {"results": [...]}') from None
    rows = data.get("results") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ResultsError(f"{path}: JSON {type(data).__name__} without a list of points; a .json results file "
                           'holds a list of points or {"results": [...]}')
    good = [(i, r) for i, r in enumerate(rows) if isinstance(r, dict) and POINT_FIELD in r]
    bad = [BadLine(str(path), i, f"item {i} ({json.dumps(r)[:40]}) is not a point", json.dumps(r))
           for i, r in enumerate(rows) if not (isinstance(r, dict) and POINT_FIELD in r)]
    return good, bad


# --- resuming ---------------------------------------------------------------------------------------
def prepare_resume(path) -> tuple[list[BadLine], list[dict]]:
    """Before a resumed run appends to `path`: lines that are not points go to `<path>.bad` (one JSON
    object each: file, line, reason, text) and points that ended in error or timeout to
    `<path>.retried`, so that they are measured again; `path` is rewritten atomically with the rest,
    unchanged. Returns (the lines set aside, the points to measure again)."""
    path = Path(path)
    if not path.exists():
        return [], []
    keep, bad, retried = [], [], []
    for n, raw, last in _lines(path):
        obj, why = _parse(raw, last)
        if why:
            bad.append(BadLine(str(path), n, why, raw.decode(errors="replace")))
        elif obj.get("status") not in FINISHED:
            retried.append(obj)
        else:
            keep.append(raw + b"\n")
    if not bad and not retried and path.read_bytes().endswith(b"\n"):
        return [], []
    for b in bad:
        append_point(f"{path}.bad", {"file": b.path, "line": b.line, "reason": b.reason, "text": b.text})
    for p in retried:
        append_point(f"{path}.retried", p)
    write_atomic_bytes(path, b"".join(keep))
    return bad, retried


# --- what --resume may reuse -----------------------------------------------------------------------
RUN_NAME = "run.json"  # OUT/run.json: the code and settings that measured OUT/points.jsonl
STALE_SUFFIX = ".stale"


def code_version() -> str:
    """The commit that measures (env.git_sha: VITCORE_GIT_SHA, else `git rev-parse`, "-dirty" with
    uncommitted edits). Uncommitted edits themselves are not compared: the reuse line says so."""
    from vitcore.spec.env import git_sha  # a subprocess, no torch

    return git_sha()


def reuse_decision(out, run: dict) -> tuple[bool, str]:
    """Whether a run described by `run` ({"code", "date", "settings"}) may reuse the finished points in
    OUT: only when OUT/run.json names the same code and settings. Returns (reuse, the line saying so
    or why not; empty where OUT holds no points)."""
    out = Path(out)
    n = len(finished_keys(out / "points.jsonl"))
    if not (out / "points.jsonl").exists():
        return True, ""
    try:
        old = json.loads((out / RUN_NAME).read_text())
        code, date, settings = old["code"], old["date"], old["settings"]
    except FileNotFoundError:
        return False, f"{out} has no {RUN_NAME} naming the code and settings that measured its points"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False, f"{out / RUN_NAME} is not a vitcore run record"
    if code != run["code"]:
        return False, f"its points were measured by code {code} ({date}); this is {run['code']}"
    diffs = [f"{k} {settings.get(k)!r} then, {v!r} now" for k, v in run["settings"].items() if settings.get(k) != v]
    if diffs:
        return False, f"its points ({code}, {date}) were measured with other settings: {'; '.join(diffs)}"
    dirty = "; uncommitted edits are not compared" if code.endswith("-dirty") else ""
    return True, f"reusing {n} point{'s' if n != 1 else ''} from {out} ({code}, {date}{dirty})"


def start_fresh(out) -> Path | None:
    """Move OUT/points.jsonl aside (to points.jsonl.stale, replacing an older one); returns where."""
    path = Path(out) / "points.jsonl"
    if not path.exists():
        return None
    stale = path.with_name(path.name + STALE_SUFFIX)
    os.replace(path, stale)
    return stale


# --- the --out lock ---------------------------------------------------------------------------------
_HELD: dict[str, tuple[int, Path]] = {}


def lock_out(folder) -> str | None:
    """Hold `folder`/.vitcore.lock (an flock, released by the kernel when this process ends, however
    it ends) for this process's lifetime; a second run on the same folder is a ResultsError naming
    the holder. Returns a message where the lock of a run that ended without releasing it (killed)
    was taken over, else None. Re-entrant within a process; a no-op where there is no fcntl."""
    folder = Path(folder)
    if fcntl is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ResultsError(f"--out {str(folder)!r} is in use by another vitcore run ({holder or 'pid unknown'}); "
                               "wait for it to end or choose another --out") from None
        if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    stale = _holder(fd)
    os.ftruncate(fd, 0)
    since = _dt.datetime.now().isoformat(timespec="seconds")
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since, "argv": sys.argv}).encode(), 0)
    _HELD[key] = (fd, path)
    atexit.register(unlock_out, folder)
    if stale:
        return f"took over the lock of {folder} from {stale}, which ended without releasing it"
    return None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"pid {info['pid']}, since {info['since']}"
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return ""


def unlock_out(folder) -> None:
    """Release the lock (removing the file while still holding it, so no one locks a removed file)."""
    key = str((Path(folder) / LOCK_NAME).resolve())
    fd, path = _HELD.pop(key, (None, None))
    if fd is not None:
        path.unlink(missing_ok=True)
        os.close(fd)
