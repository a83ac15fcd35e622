"""Atomic writes and the user's cache folder: how every part of the suite writes a file (readers
see the old or the new file, never half of one) and where it keeps things between runs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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



def cache_dir(*parts: str) -> Path:
    """Where vitcore keeps things between runs (never the repository): $VITCORE_CACHE_DIR, else
    $XDG_CACHE_HOME/vitcore, else ~/.cache/vitcore."""
    base = os.environ.get("VITCORE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vitcore"
    return Path(base, *parts)
