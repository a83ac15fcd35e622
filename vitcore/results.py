"""Result files: append-only JSON lines (one finished point per line), atomic writes elsewhere.

A point is appended with one write() on an O_APPEND descriptor and fsync'd, so a crash or Ctrl-C
keeps every finished point and never leaves half a line that a reader would trust: a trailing
partial line is ignored on read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def append_point(path, point: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(point, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path) -> list[dict]:
    """Points from a points.jsonl, a gpu-results.json ({"results": [...]}) or a JSON list."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_points(path)
    data = json.loads(path.read_text())
    return data["results"] if isinstance(data, dict) else data


def read_points(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # an interrupted final write
    return points


def write_atomic(path, text: str) -> None:
    write_atomic_bytes(path, text.encode())


def write_atomic_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
