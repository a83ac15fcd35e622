"""Worker lifecycle: a SIGKILL of the vitcore main process (not its group: nothing runs its
cleanup) ends its spawned workers within seconds, and `--resume` then completes every point; the
same SIGKILL of a process holding a worker pool (vitcore/processes/worker_pool.py) ends the pool's worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import _stat, alive
from vitcore.spec.points import key as point_key
from vitcore.store.results import read_points

BENCH = [sys.executable, "-m", "vitcore.cli", "bench", "--device", "cpu", "--model", "vit-tiny", "--plugins",
         "torch_ddp", "--batch-sizes", "4,8,16", "--steps", "3", "--repeats", "3", "--warmup", "1",
         "--min-window", "0", "--no-reference"]
GRACE_S = 5.0  # how long a worker may outlive its parent


def _children(pid: int) -> set[int]:
    """The spawned workers of `pid` (not multiprocessing's resource tracker)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and _stat(proc)[1] == str(pid):
                cmd = (proc / "cmdline").read_bytes()
                if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                    found.add(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
@pytest.mark.slow
def test_sigkill_of_the_main_process_ends_its_workers_and_resume_completes_every_point(tmp_path):
    out = tmp_path / "b"
    proc = subprocess.Popen(BENCH + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (workers := _children(proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # Mid-run, at the hardest moment: the worker is still starting (importing torch and colossalai,
    # the longest stretch of a group), before any code of the suite runs in it.
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)  # the main pid only: no cleanup of any kind runs
    proc.wait()
    killed = time.monotonic()
    assert workers, "no worker was running when the main process was killed"
    while alive(workers) and time.monotonic() - killed < 30:
        time.sleep(0.1)
    outlived = time.monotonic() - killed
    print(f"workers {sorted(workers)} gone {outlived:.2f} s after the main process was killed")
    assert not alive(workers) and outlived < GRACE_S, f"workers outlived the main process by {outlived:.1f}s"
    assert len(read_points(out / "points.jsonl")) < 3, "the kill should land mid-run"

    p = subprocess.run(BENCH + ["--out", str(out), "--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ended without releasing it" in p.stderr  # the killed run's lock, taken over
    points = read_points(out / "points.jsonl")
    keys = [point_key(x) for x in points]
    assert len(keys) == len(set(keys)) == 3 and all(x["status"] == "ok" for x in points)
    assert sorted(x["batch_size"] for x in points) == [4, 8, 16]


POOL_HOLDER = """
import sys, time
from tests.support import workers
from vitcore.processes.worker_pool import WorkerPool
if __name__ == "__main__":
    pool = WorkerPool("cpu", preload=())
    print(pool.run(workers.pid_and_world, timeout_s=120)[0], flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
@pytest.mark.slow
def test_sigkill_of_a_pool_holder_ends_the_pool_worker(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(POOL_HOLDER)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        worker = int(proc.stdout.readline())  # the pool's worker, idle between cases
        assert alive({worker})
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up of any kind runs in the holder
        proc.wait()
        killed = time.monotonic()
        while alive({worker}) and time.monotonic() - killed < 30:
            time.sleep(0.1)
        outlived = time.monotonic() - killed
        print(f"pool worker {worker} gone {outlived:.2f} s after its holder was killed")
        assert not alive({worker}) and outlived < GRACE_S, f"the pool worker outlived its holder by {outlived:.1f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
