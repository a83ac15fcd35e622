"""What the processes of one pytest session share (docs/gpu.md): results computed once, the GPU
(a lock per test), the session's third-party log, the single-use GPU workers."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.options import suite
from vitcore import files
from vitcore.processes import launch, worker_pool


def needs_gpus_alone(item) -> bool:
    """Performance tests (marker gpu_exclusive) and multigpu tests (every GPU of the host) run with the
    GPUs to themselves, after every test that shares them (sorted last by the root conftest, the lock
    taken in tests/conftest.py)."""
    return item.get_closest_marker("gpu_exclusive") is not None or item.get_closest_marker("multigpu") is not None


def interleave_shared_gpu(items) -> None:
    """Shared-GPU tests (marker gpu, not exclusive) in turns of their test functions (parity,
    checkpoint, convergence, parity, ...) in the slots they held, in place. pytest-xdist hands out
    the first tests round-robin, and each function's first case computes a once-per-session result
    the others wait for (the torch_ddp reference, ~16 s on an H100; the plain convergence loop,
    ~12 s): in file order the first 8 of the Gemini tier were all parity tests, and every worker
    waited on the one computing the reference. In turns, the others run checkpoint cases meanwhile."""
    slots = [i for i, it in enumerate(items) if it.get_closest_marker("gpu") and not needs_gpus_alone(it)]
    by_function: dict[object, list] = {}
    for i in slots:
        by_function.setdefault(getattr(items[i], "originalname", items[i].name), []).append(items[i])
    turns = [fn[k] for k in range(max(map(len, by_function.values()), default=0))
             for fn in by_function.values() if k < len(fn)]
    for i, item in zip(slots, turns, strict=True):
        items[i] = item


def session_dir(config) -> Path:
    """A folder every process of this pytest session shares: the basetemp, whose subfolders are the
    xdist workers' own basetemps (gw0, gw1, ...)."""
    base = config._tmp_path_factory.getbasetemp()  # pytest's and xdist's own handle on it
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def computed_once(config, name: str, key: Any, compute: Callable[[], Any]) -> Any:
    """compute()'s value, computed by the first process of this session that asks for `key` (the
    others wait on a file lock, then read its pickle). A failure stores nothing: the next asker
    computes again, and fails the same way."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    path = session_dir(config) / f"{name}-{digest}.pickle"
    with _flock(path.with_suffix(".lock"), fcntl.LOCK_EX):
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = compute()
        files.write_atomic_bytes(path, pickle.dumps(value))
        return value


@contextmanager
def gpu_share(config, *, exclusive: bool) -> Iterator[None]:
    """A readers-writer lock on the GPU across the session's processes (fcntl.flock on one file):
    correctness tests share it, performance tests wait until no other test holds it and then hold it
    alone. flock has no writer priority: performance tests are sorted last (root conftest), so the
    shared holders run out. The kernel drops the lock of a process that dies."""
    with _flock(session_dir(config) / "gpu.lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
        yield


@contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    """fcntl.flock on a file of its own open (so threads conflict as processes do), until the block ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def third_party_log(config) -> Path:
    """The session's log of everything that is not the suite's own output: Python warnings (root
    conftest) and the GPU workers' stdout and stderr (colossalai's notices, torch's warnings). One
    file for every process of the session (--results-out where given, else the session's basetemp);
    the terminal summary counts its lines."""
    folder = suite(config).results_out
    path = Path(folder) if folder else session_dir(config)
    path.mkdir(parents=True, exist_ok=True)
    return path / "third-party.log"


def worker_output(config) -> launch.WorkerOutput:
    """GPU workers write into the session's third-party log (the console with -v -v)."""
    return launch.WorkerOutput(str(third_party_log(config)), suite(config).verbose > 1)


FRESH_GPU_WORKERS = pytest.StashKey[worker_pool.WorkerPool]()


def fresh_gpu_workers(config) -> worker_pool.WorkerPool:
    """This process's single-use GPU workers for the performance tests: each measurement in a process
    that has run nothing before, as the budgets were recorded (vitcore bench, fresh processes), with
    its imports paid while something else runs (tests/conftest.py starts the first at collection)."""
    pool = config.stash.get(FRESH_GPU_WORKERS, None)
    if pool is None:
        pool = config.stash[FRESH_GPU_WORKERS] = worker_pool.WorkerPool("cuda", single_use=True,
                                                                         output=worker_output(config))
    return pool
