"""Process groups: in this process, in several spawned processes, or under torchrun.

A multi-process run either returns every rank's result or raises WorkerError with the failing
rank's traceback (or its exit signal) as soon as one fails, and after `timeout_s` at the latest;
surviving workers are killed so that nothing hangs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import colossalai
import torch
import torch.distributed as dist
from colossalai.logging import get_dist_logger

from vitcore import VitcoreError, compat


class WorkerError(VitcoreError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VitcoreError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return device


def _quiet_colossalai_logs() -> None:
    get_dist_logger().set_level("ERROR")  # its per-step warnings would drown the progress output


def _prepare() -> None:
    """What every process the suite starts does before its process group exists."""
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off everywhere
    compat.apply()
    _quiet_colossalai_logs()


def init_process_group(rank: int, world_size: int, port: int, device: str) -> None:
    _prepare()
    colossalai.launch(rank=rank, world_size=world_size, host="127.0.0.1", port=port,
                      backend=backend_for(device), local_rank=rank, verbose=False)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def run(fn: Callable[..., Any], *args, world_size: int = 1, device: str = "auto",
        timeout_s: float = 900.0) -> list[Any]:
    """Run fn(*args) on every rank; return the list of per-rank results (rank order)."""
    device = resolve_device(device)
    if under_torchrun():
        _prepare()
        colossalai.launch_from_torch(backend=backend_for(device), verbose=False)
        try:
            return [fn(*args)]
        finally:
            destroy_process_group()
    if world_size == 1:
        _on_free_port(lambda port: init_process_group(0, 1, port, device))
        try:
            return [fn(*args)]
        finally:
            destroy_process_group()
    return spawn(fn, args, world_size=world_size, device=device, timeout_s=timeout_s)


def _worker(rank, world_size, port, device, fn, args, results):
    try:
        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        init_process_group(rank, world_size, port, device)
        out = fn(*args)
        results.put((rank, "ok", out))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent
        results.put((rank, "error", traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        destroy_process_group()


PORT_ATTEMPTS = 3


def _on_free_port(start: Callable[[int], Any]) -> Any:
    """start(port) on a free port. free_port() releases the port it found before rank 0's store
    binds it, so another run starting at the same moment (pytest -n 4 on one GPU host) can take it
    first: such a start fails (EADDRINUSE) before any work ran, and is retried on a new port."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start(free_port())
        except Exception as e:
            if "EADDRINUSE" not in str(e) and "address already in use" not in str(e).lower():
                raise
    return start(free_port())  # the last attempt's failure, whatever it is, is the caller's


def spawn(fn, args, *, world_size: int, device: str, timeout_s: float) -> list[Any]:
    """fn(*args) in `world_size` fresh processes. A run whose rendezvous port was taken by another
    process in the meantime fails before fn starts, so it is retried on a new port (seen on an H100:
    one of 17 convergence tests run 4 at a time lost the race)."""
    return _on_free_port(lambda port: _spawn_once(fn, args, world_size=world_size, device=device,
                                                  timeout_s=timeout_s, port=port))


def _spawn_once(fn, args, *, world_size: int, device: str, timeout_s: float, port: int) -> list[Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, device, fn, args, results),
                         daemon=True, name=f"vitcore-rank{r}") for r in range(world_size)]
    for p in procs:
        p.start()
    done: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < world_size:
            try:
                rank, status, payload = results.get(timeout=0.5)
                (done if status == "ok" else errors)[rank] = payload
            except queue.Empty:
                pass
            died = {r: p.exitcode for r, p in enumerate(procs)
                    if r not in done and r not in errors and p.exitcode not in (None, 0)}
            if errors or died:
                raise WorkerError(_failure_message(procs, results, errors, died, done))
            if time.monotonic() > deadline:
                missing = sorted(set(range(world_size)) - set(done))
                raise WorkerError(f"timed out after {timeout_s:.0f}s waiting for ranks {missing}")
        return [done[r] for r in range(world_size)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=10)


def _failure_message(procs, results, errors, died, done, grace_s: float = 2.0) -> str:
    """Name the root cause: a worker killed by a signal makes its peers fail with connection errors
    a moment later, so wait briefly and report the dead worker first, then the tracebacks."""
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        try:
            rank, status, payload = results.get(timeout=0.1)
            if status == "error":
                errors[rank] = payload
        except queue.Empty:
            pass
        for r, p in enumerate(procs):
            if r not in done and r not in errors and p.exitcode not in (None, 0):
                died[r] = p.exitcode
    lines = []
    for r, code in sorted(died.items()):
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        lines.append(f"worker rank {r} died ({how}) before returning a result")
    for r, tb in sorted(errors.items()):
        lines.append(f"worker rank {r} failed:\n{tb}")
    return "\n".join(lines)
