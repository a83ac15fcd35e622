"""Whether processes are alive, from /proc (the lifecycle and pool tests)."""

from __future__ import annotations

from pathlib import Path


def _stat(proc: Path) -> list[str]:
    """(state, parent pid) of /proc/PID/stat."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]


def alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if _stat(Path(f"/proc/{pid}"))[0] != "Z":  # a zombie is dead, only not yet reaped
                alive.add(pid)
        except OSError:
            continue
    return alive
