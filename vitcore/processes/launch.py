"""Process groups: in this process, in several spawned processes, or under torchrun.

A multi-process run either returns every rank's result or raises WorkerError as soon as one rank
fails, and after `timeout_s` at the latest; surviving workers are killed so that nothing hangs. The
error is one line (the rank, the point, the first line of the real error, not a peer's "connection
closed"); every rank's full traceback goes to a log file whose path the line gives. A worker dies
with the process that started it, however that ends (a SIGKILL runs no cleanup).

torch, torch.distributed and colossalai (8 s to import here, measured) are imported where they are
used: a spawned worker imports this module first and arms its death signal before those imports,
and before it unpickles what it runs (which imports them too), so that a parent killed meanwhile
never leaves it running.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import logging
import multiprocessing as mp
import os
import pickle
import queue
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

from vitcore import VitcoreError, files
from vitcore.processes import output as con  # the console rule: light, no torch
from vitcore.processes.output import WorkerOutput


class WorkerError(VitcoreError):
    """One line; `details` holds every rank's traceback (also written to the log file `log`)."""

    def __init__(self, message: str, *, details: str = "", log: str | None = None):
        super().__init__(message)
        self.details = details
        self.log = log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def resolve_device(device: str) -> str:
    import torch  # see the module's docstring

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VitcoreError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return device


def _prepare() -> None:
    """What every process the suite starts does before its process group exists."""
    from colossalai.logging import get_dist_logger  # see the module's docstring

    # compat imports torch: only in a worker
    from vitcore.processes import compat

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off everywhere
    compat.apply()
    get_dist_logger().set_level("ERROR")  # colossalai's per-step warnings would drown the progress output


def init_process_group(rank: int, world_size: int, port: int, device: str) -> None:
    import colossalai  # see the module's docstring

    _prepare()
    colossalai.launch(rank=rank, world_size=world_size, host="127.0.0.1", port=port,
                      backend=backend_for(device), local_rank=rank, verbose=False)


def destroy_process_group() -> None:
    import torch.distributed as dist  # see the module's docstring

    if dist.is_initialized():
        dist.destroy_process_group()


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def run(fn: Callable[..., Any], *args, world_size: int = 1, device: str = "auto",
        timeout_s: float = 900.0, output: WorkerOutput | None = None) -> list[Any]:
    """Run fn(*args) on every rank; return the list of per-rank results (rank order). output: where
    spawned workers' stdout and stderr go (see spawn)."""
    if not isinstance(world_size, int) or world_size < 1:
        raise VitcoreError(f"world size {world_size!r} must be a positive integer (--nproc)")
    device = resolve_device(device)
    if under_torchrun():
        import colossalai  # see the module's docstring

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
    return spawn(fn, args, world_size=world_size, device=device, timeout_s=timeout_s, output=output)


def _redirect_output(output: WorkerOutput, rank: int = 0) -> Callable[[], None]:
    """Point fds 1 and 2 of this worker at the log file; with verbose or console_lines, through a pipe
    each whose thread sends every line by its shape: the suite's own (console_lines) to the console's
    same stream, any other to the log (and the console's stderr when verbose). Returns what flushes
    and closes it at the worker's end."""
    log_fd = os.open(output.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if not (output.verbose or output.console_lines):
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return lambda: None
    if output.console_lines and rank == 0:  # the DATASET/WEIGHTS notices once, as the parent's
        logging.getLogger(con.OWN_LOGGER).addHandler(con.OwnLogHandler())
    echo = os.dup(2) if output.verbose else None
    threads = []
    for fd in (1, 2):
        console = os.dup(fd) if output.console_lines else None
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        threads.append(threading.Thread(target=_route_lines, args=(r, console, log_fd, echo, con.is_own),
                                        daemon=True, name=f"vitcore-worker-fd{fd}"))
        threads[-1].start()

    def close():  # idempotent: before the result is sent, and at the worker's end
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_fd, 1)  # the pipes' last writers: the threads then drain them; later output (the
        os.dup2(log_fd, 2)  # process group's teardown) goes to the log as it is
        for t in threads:
            t.join(timeout=5)

    return close


def _route_lines(r: int, console: int | None, log_fd: int, echo: int | None, is_own) -> None:
    rest = b""
    while chunk := os.read(r, 65536):
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            _route_line(line + b"\n", console, log_fd, echo, is_own)
    if rest:
        _route_line(rest + b"\n", console, log_fd, echo, is_own)


def _route_line(line: bytes, console, log_fd, echo, is_own) -> None:
    if console is not None and is_own(line.decode(errors="replace")):
        os.write(console, line)
        return
    os.write(log_fd, line)
    if echo is not None:
        os.write(echo, line)


class _Deferred:
    """A worker's (fn, args), pickled as the worker starts but unpickled only when the worker asks:
    unpickling imports fn's module (torch, colossalai), which waits until the death signal is armed.
    ForkingPickler, as multiprocessing's own, so that tensors travel as shared memory."""

    def __init__(self, obj):
        self.obj = obj

    def __reduce__(self):
        return _Deferred._from_bytes, (bytes(ForkingPickler.dumps(self.obj)),)

    @classmethod
    def _from_bytes(cls, blob: bytes) -> _Deferred:
        d = cls(None)
        d.blob = blob
        return d

    def load(self):
        return pickle.loads(self.blob) if hasattr(self, "blob") else self.obj


def _worker(rank, world_size, port, device, payload: _Deferred, results_q, parent_pid, output=None):
    _die_with_parent(parent_pid, f"vitcore-rank{rank}")
    close_output = _redirect_output(output, rank) if output is not None else (lambda: None)
    import torch  # see the module's docstring

    try:
        fn, args = payload.load()
        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        init_process_group(rank, world_size, port, device)
        out = fn(*args)
        close_output()  # its lines all written before the parent, holding every result, ends this worker
        results_q.put((rank, "ok", out))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        failure = (first_line(e), traceback.format_exc())
        close_output()
        results_q.put((rank, "error", failure))
        raise SystemExit(1) from None
    finally:
        destroy_process_group()
        close_output()


def first_line(e: BaseException) -> str:
    """An exception as one line (its type and first non-blank line, at most 300 characters)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


# --- dying with the parent ------------------------------------------------------------------------
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 0.5


def _die_with_parent(parent_pid: int, name: str) -> None:
    """End this worker when `parent_pid` ends. On Linux the kernel sends SIGKILL when the parent
    dies (prctl PR_SET_PDEATHSIG; the parent is the thread that started the worker, and spawn()
    waits for its workers in that thread); a thread polling the parent's pid is the fallback
    elsewhere. Also names the process `name` (ps -o comm, /proc/PID/comm)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died while this worker was starting
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="vitcore-parent-watchdog").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:  # a dead parent's children are re-parented
        time.sleep(WATCHDOG_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGKILL)


PORT_ATTEMPTS = 3


def _on_free_port(start: Callable[[int], Any]) -> Any:
    """start(port) on a free port. free_port() releases the port it found before rank 0's store
    binds it, so another run starting at the same moment (pytest -n 4 on one GPU host) can take it
    first: such a start fails (EADDRINUSE) before any work ran, and is retried on a new port."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start(free_port())
        except Exception as e:
            text = f"{e} {getattr(e, 'details', '')}"
            if "EADDRINUSE" not in text and "address already in use" not in text.lower():
                raise
    return start(free_port())  # the last attempt's failure, whatever it is, is the caller's


def spawn(fn, args, *, world_size: int, device: str, timeout_s: float, label: str | None = None,
          log_dir=None, output: WorkerOutput | None = None) -> list[Any]:
    """fn(*args) in `world_size` fresh processes. A run whose rendezvous port was taken by another
    process in the meantime fails before fn starts, so it is retried on a new port (seen on an H100:
    one of 17 convergence tests run 4 at a time lost the race). label: what the run measures, for
    the error line (default: read from a RunConfig or a group of planned points in `args`);
    log_dir: where a failure's tracebacks go (default: the user cache, files.cache_dir("logs"));
    output: where the workers' stdout and stderr go (default: this process's)."""
    label = label or _label(args)
    return _on_free_port(lambda port: _spawn_once(fn, args, world_size=world_size, device=device,
                                                  timeout_s=timeout_s, port=port, label=label, log_dir=log_dir,
                                                  output=output))


def _label(args) -> str | None:
    """A label such as 'torch_ddp fp32 bs8,16' from the first RunConfig (or group of planned points) in args."""
    for a in args:
        items = a if isinstance(a, (list, tuple)) else [a]
        cfgs = [x for x in items if all(hasattr(x, n) for n in ("plugin", "precision", "batch_size"))]
        if cfgs:
            sizes = ",".join(dict.fromkeys(str(c.batch_size) for c in cfgs))
            return f"{cfgs[0].plugin} {cfgs[0].precision} bs{sizes}"
    return None


def _spawn_once(fn, args, *, world_size: int, device: str, timeout_s: float, port: int, label, log_dir,
                output=None) -> list[Any]:
    ctx = mp.get_context("spawn")
    results_q = ctx.Queue()
    payload = _Deferred((fn, args))
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, device, payload, results_q, os.getpid(), output),
                         daemon=True, name=f"vitcore-rank{r}") for r in range(world_size)]
    for p in procs:
        p.start()
    done: dict[int, Any] = {}
    errors: dict[int, tuple[str, str]] = {}  # rank -> (summary, traceback), in order of arrival
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < world_size:
            try:
                rank, status, payload = results_q.get(timeout=0.5)
                (done if status == "ok" else errors)[rank] = payload
            except queue.Empty:
                pass
            died = {r: p.exitcode for r, p in enumerate(procs)
                    if r not in done and r not in errors and p.exitcode not in (None, 0)}
            if errors or died:
                failure = _failure(procs, results_q, errors, done, label, log_dir)
                if failure is not None:
                    raise failure
            if time.monotonic() > deadline:
                missing = sorted(set(range(world_size)) - set(done))
                where = f" in {label}" if label else ""
                raise WorkerError(f"timed out after {timeout_s:.0f}s waiting for ranks {missing}{where}")
        return [done[r] for r in range(world_size)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=10)


# A peer's symptom of another rank's failure, never the cause.
PEER_SYMPTOM = re.compile(r"connection (closed|reset) by peer|broken pipe|communicator was aborted|"
                          r"socket timeout|DistNetworkError|DistBackendError|connection refused", re.I)


def _failure(procs, results_q, errors, done, label, log_dir, grace_s: float = 2.0) -> WorkerError | None:
    """One line naming the root cause, every rank's traceback in a log file. A worker killed by a
    signal (or one that raised) makes its peers fail with connection errors a moment later, so wait
    briefly, then prefer a killed rank, then an error that is not a peer's symptom, in order of arrival."""
    end = time.monotonic() + grace_s
    while time.monotonic() < end and len(done) + len(errors) < len(procs):
        try:
            rank, status, payload = results_q.get(timeout=0.1)
            (done if status == "ok" else errors)[rank] = payload
        except queue.Empty:
            pass
    died = {r: p.exitcode for r, p in enumerate(procs) if r not in done and r not in errors
            and p.exitcode not in (None, 0)}
    if not died and not errors:
        return None  # the ranks that exited had delivered their results (e.g. a crash at teardown)
    log = _write_log(label, errors, died, log_dir)
    where = f" in {label}" if label else ""
    killed = [r for r, code in sorted(died.items()) if code < 0]
    causes = [r for r, (summary, tb) in errors.items() if not PEER_SYMPTOM.search(summary)]
    if killed:
        r = killed[0]
        head = f"worker rank {r} died (signal {-died[r]}){where} before returning a result"
    elif causes or errors:
        r = (causes or list(errors))[0]
        head = f"worker rank {r} failed{where}: {errors[r][0]}"
    else:
        r = min(died)
        head = f"worker rank {r} died (exit code {died[r]}){where} before returning a result"
    details = "\n".join(tb for _, tb in errors.values())
    return WorkerError(f"{head}; every rank's traceback: {log}", details=details, log=log)


def _write_log(label, errors, died, log_dir) -> str:
    folder = files.cache_dir("logs") if log_dir is None else log_dir
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9.,]+", "-", label or "run").strip("-")
    path = os.path.join(folder, f"{stamp}-pid{os.getpid()}-{slug}.log")
    lines = [f"vitcore multi-process failure{f' in {label}' if label else ''}, {stamp}"]
    for r, code in sorted(died.items()):
        lines.append(f"\n--- rank {r}: died ({f'signal {-code}' if code < 0 else f'exit code {code}'}) "
                     "without a traceback")
    for r, (summary, tb) in errors.items():
        lines.append(f"\n--- rank {r}: {summary}\n{tb}")
    files.write_atomic(path, "\n".join(lines) + "\n")
    return path
