"""A long-lived single-rank worker that runs many cases and pays its start-up once.

launch.spawn starts fresh processes per call: on an H100 a 5-step parity case of the tiny preset took
25-32 s, nearly all start-up (imports, process group, CUDA context). A WorkerPool keeps one worker
process that imports once, then runs the cases sent to it one at a time, each isolated as a fresh
process would be:

- a fresh process group on a fresh port (launch.init_process_group, which seeds random, numpy and
  torch as colossalai.launch does in a fresh process), destroyed after the case;
- the environment variables, working directory and torch's global switches (default dtype, grad
  mode, deterministic algorithms, cuDNN flags, float32 matmul precision) restored after the case;
  torch._dynamo reset, gc; on CUDA the cache emptied and the peak memory statistics reset.

single_use=True gives every case a worker that has run nothing before (a fresh process as far as the
GPU and the allocator can tell) and retires it after the case (asked to stop, not waited for); it keeps
`spares` workers started ahead, importing in the background (prestart() starts them), and starts a
replacement after each case. The performance tests use it: a pooled worker's allocator carries the
reserve of the cases it ran (torch_fsdp bs128 reserved +4.3%), and budgets come from fresh processes.

A case that raises fails with one line (WorkerError; its traceback in `details` and a log file), and
the worker stays. A case that ends its worker (os._exit, a signal, a segfault) or runs past its
timeout fails alone: the worker is killed and the next case starts a new one. The worker dies with
its parent (launch._die_with_parent: the thread that started it, as for spawn), ignores Ctrl-C (the
parent decides), and close() ends it; pools still open at interpreter exit are closed then.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitcore import VitcoreError
from vitcore.processes import launch
from vitcore.processes.launch import WorkerError, first_line

DEVICES = ("cpu", "cuda")
# What a worker imports before its first case: what the suite's cases import (colossalai, and
# transformers through vitcore.training.train). Measured on a 2-core CPU: 12 s for these, 2.6 s for torch alone.
PRELOAD = ("colossalai", "vitcore.training.train")
STARTUP_TIMEOUT_S = 300.0  # imports only: a colossalai JIT kernel build happens inside a case, under its timeout
CLOSE_GRACE_S = 10.0
_STOP = b""  # the message that ends a worker's loop


class WorkerPool:
    """Runs fn(*args) as one rank (world size 1) on `device` in a long-lived worker process, started
    at the first case. output: where the worker's stdout and stderr go (default: this process's);
    log_dir: where a failed case's traceback goes (default: the user cache, as for spawn)."""

    def __init__(self, device: str, *, preload: tuple[str, ...] = PRELOAD,
                 output: launch.WorkerOutput | None = None, log_dir=None, single_use: bool = False,
                 spares: int = 2):
        if device not in DEVICES:
            raise VitcoreError(f"worker pool device {device!r} is not one of {', '.join(DEVICES)}")
        self.device, self.preload, self.output, self.log_dir = device, tuple(preload), output, log_dir
        self.single_use, self.spares = single_use, max(1, spares)  # spares: single_use only
        self._queue: list[tuple[Any, Any, float]] = []  # single_use: started workers (proc, conn, start) not yet used
        self._retired: list[Any] = []  # single_use: workers asked to stop after their case, reaped later
        self._proc = None
        self._conn = None
        self._ready = False  # the current worker said "ready" (its imports are done)
        self._used = False  # the current worker has been sent a case
        self._started_at = 0.0
        self.startup_s: float | None = None  # the current worker's imports, measured in the worker
        self.workers_started = 0  # a crash or a timeout replaces the worker: this counts them
        _OPEN.add(self)

    @property
    def pid(self) -> int | None:
        """The current worker's pid, or (single_use) the next one's; None before the first case and after close()."""
        if self._proc is None and self._queue:
            return self._queue[0][0].pid
        return self._proc.pid if self._proc is not None else None

    def run(self, fn: Callable[..., Any], args: tuple = (), *, timeout_s: float, label: str | None = None) -> Any:
        """fn(*args)'s result; WorkerError (one line) when the case raises, ends its worker or runs past
        timeout_s. label names the case in that line (default: from a RunConfig in args, else fn's name)."""
        label = label or launch._label(args) or getattr(fn, "__qualname__", repr(fn))
        if self.single_use:
            self._take_spare()
        elif self._proc is None or not self._proc.is_alive():
            self._launch()
        if not self._ready:
            self._await_ready()
        self._used = True
        self._conn.send((fn, tuple(args)))  # pickled here: an unpicklable case fails in this process
        try:
            reply = self._wait(label, timeout_s)
        except WorkerError:  # a crash or a timeout: the worker's state is unknown
            self._end(kill=True)
            self._top_up()
            raise
        except BaseException:  # Ctrl-C: the session is ending
            self._end(kill=True)
            raise
        status, payload, retire = reply
        if retire:  # the case's clean-up failed: the next case gets a new worker
            self._end(kill=True)
        if self.single_use:  # retire this one without waiting; a replacement imports while the caller goes on
            self._end(kill=False, wait=False)
            self._top_up()
        if status == "ok":
            return payload
        summary, tb = payload
        log = launch._write_log(label, {0: (summary, tb)}, {}, self.log_dir)
        raise WorkerError(f"case {label} failed: {summary}; traceback: {log}", details=tb, log=log)

    def prestart(self) -> None:
        """Start the worker (single_use: `spares` of them) now, without waiting for the imports (run() waits)."""
        if self.single_use:
            self._top_up()
        elif self._proc is None or not self._proc.is_alive():
            self._launch()

    @property
    def unused(self) -> bool:
        """No worker, or one that has run no case: it holds no GPU memory nor CUDA context."""
        return self._proc is None or not self._used

    def close(self) -> None:
        """End the worker (asked to stop, killed after CLOSE_GRACE_S; at once while it still imports) and
        any spare (killed: it has run nothing). A later run() starts a new one."""
        self._end(kill=not self._ready)
        for proc, conn, _ in self._queue:
            proc.kill()
            conn.close()
        for proc in [q[0] for q in self._queue] + self._retired:
            proc.join(timeout=CLOSE_GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=CLOSE_GRACE_S)
        self._queue, self._retired = [], []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the parent's side ------------------------------------------------------------------------
    def _launch(self) -> None:
        self._end(kill=True)  # a worker that died between cases (e.g. its starting thread ended)
        self._proc, self._conn, self._started_at = self._spawn()  # _end left _ready and _used False

    def _spawn(self) -> tuple[Any, Any, float]:
        ctx = mp.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, args=(child_end, self.device, os.getpid(), self.preload, self.output),
                           daemon=True, name="vitcore-pool")
        proc.start()
        child_end.close()
        self.workers_started += 1
        return proc, parent_end, time.monotonic()

    def _top_up(self) -> None:
        """single_use: `spares` started workers (a dead one replaced), the retired ones reaped."""
        self._retired = [p for p in self._retired if p.exitcode is None]
        dead = [q for q in self._queue if not q[0].is_alive()]
        for q in dead:
            q[1].close()
        self._queue = [q for q in self._queue if q not in dead]
        while len(self._queue) < self.spares:
            self._queue.append(self._spawn())

    def _take_spare(self) -> None:
        """single_use: the oldest spare becomes the current worker (run() waits for its imports)."""
        self._end(kill=True)
        self._top_up()
        self._proc, self._conn, self._started_at = self._queue.pop(0)  # _end left _ready and _used False

    def _await_ready(self) -> None:
        proc, parent_end = self._proc, self._conn
        deadline = self._started_at + STARTUP_TIMEOUT_S
        try:
            while not parent_end.poll(0.2):
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise WorkerError(self._startup_failure(proc))
            status, payload = parent_end.recv()
        except (EOFError, OSError):
            raise WorkerError(self._startup_failure(proc)) from None
        except BaseException:
            self._end(kill=True)
            raise
        if status != "ready":
            self._end(kill=True)
            raise WorkerError(f"the {self.device} worker pool's worker failed while starting: {payload[0]}",
                              details=payload[1])
        self.startup_s = payload
        self._ready = True

    def _startup_failure(self, proc) -> str:
        alive = proc.is_alive()
        self._end(kill=True)
        if alive:
            return f"the {self.device} worker pool's worker did not start within {STARTUP_TIMEOUT_S:.0f}s (imports)"
        return f"the {self.device} worker pool's worker died while starting ({_exit_text(proc.exitcode)})"

    def _wait(self, label: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        proc, conn = self._proc, self._conn
        while True:
            if conn.poll(0.2):
                try:
                    return conn.recv()
                except (EOFError, OSError):  # the worker's end closed: it died mid-case
                    break
            if not proc.is_alive():
                if conn.poll(0):  # a reply written just before it ended
                    continue
                break
            if time.monotonic() > deadline:
                raise WorkerError(f"case {label} timed out after {timeout_s:.0f}s; its worker (pid {proc.pid}) "
                                  "was killed and the next case starts a new one")
        proc.join(timeout=CLOSE_GRACE_S)
        raise WorkerError(f"case {label} ended its worker (pid {proc.pid}, {_exit_text(proc.exitcode)}) before "
                          "returning a result; the next case starts a new one")

    def _end(self, *, kill: bool, wait: bool = True) -> None:
        """End the current worker: killed, or asked to stop and joined (wait=False: not joined; reaped by
        _top_up or close)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self._ready = self._used = False
        if proc is None:
            return
        if not kill:
            try:
                conn.send_bytes(_STOP)
            except OSError:
                pass
            if not wait:
                conn.close()
                self._retired.append(proc)
                return
            proc.join(timeout=CLOSE_GRACE_S)
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=CLOSE_GRACE_S)
        conn.close()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


_OPEN: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def close_all(*, keep_unused: bool = False) -> None:
    """Close every pool of this process (also run at interpreter exit); keep_unused: not those whose
    worker has run no case (a started spare holds nothing on the GPU)."""
    for pool in list(_OPEN):
        if not (keep_unused and pool.unused):
            pool.close()


# --- the worker's side ----------------------------------------------------------------------------
def _serve(conn, device: str, parent_pid: int, preload: tuple[str, ...], output) -> None:
    launch._die_with_parent(parent_pid, "vitcore-pool")  # before the imports, as spawn's workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal group; the parent decides
    close_output = launch._redirect_output(output) if output is not None else (lambda: None)
    try:
        t0 = time.perf_counter()
        try:
            import torch  # see launch's docstring: after the death signal is armed

            for name in preload:
                importlib.import_module(name)
            if device == "cpu":
                torch.set_num_threads(max(1, os.cpu_count() or 1))  # as spawn's single rank
            baseline = _Globals.capture()
        except BaseException as e:  # noqa: BLE001 - the parent must hear why
            conn.send(("failed", (first_line(e), traceback.format_exc())))
            return
        conn.send(("ready", time.perf_counter() - t0))
        while (blob := _receive(conn)) is not None:
            reply = _run_case(blob, device, baseline)
            try:
                conn.send(reply)
            except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be pickled
                conn.send(("error", (f"the case's result could not be sent back: {first_line(e)}",
                                     traceback.format_exc()), reply[2]))
            if reply[2]:
                return
    finally:
        close_output()


def _receive(conn) -> bytes | None:
    try:
        blob = conn.recv_bytes()
    except (EOFError, OSError):  # the parent closed its end
        return None
    return None if blob == _STOP else blob


def _run_case(blob: bytes, device: str, baseline: _Globals) -> tuple[str, Any, str | None]:
    """(status, result or (summary, traceback), why the worker must retire or None)."""
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    try:
        fn, args = pickle.loads(blob)  # imports fn's module here, not in the parent's pickle
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        launch._on_free_port(lambda port: launch.init_process_group(0, 1, port, device))
        reply = ("ok", fn(*args))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        reply = ("error", (first_line(e), traceback.format_exc()))
    try:
        _clean(device, baseline)
        retire = None
    except BaseException as e:  # noqa: BLE001 - e.g. a sticky CUDA error: this worker cannot go on
        retire = f"cleaning up after the case failed: {first_line(e)}"
    return reply + (retire,)


def _clean(device: str, baseline: _Globals) -> None:
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    # compat imports torch: only in a worker
    from vitcore.processes import compat

    launch.destroy_process_group()
    baseline.restore()
    if "torch._dynamo" in sys.modules:  # compiled graphs of this case's model must not serve the next
        torch._dynamo.reset()
    compat.clear_memoized()  # colossalai's class-level caches would keep this case's Gemini chunks
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()  # raises here if the case left the CUDA context broken
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@dataclass
class _Globals:
    """Process-wide state a case may change and a fresh process would not carry over."""

    environ: dict[str, str]
    cwd: str
    torch_switches: dict[str, Any]

    @classmethod
    def capture(cls) -> _Globals:
        return cls(dict(os.environ), os.getcwd(), _torch_switches())

    def restore(self) -> None:
        # torch: imported where it is used, so that importing this module (and the CLI) stays light
        import torch

        for name in set(os.environ) - set(self.environ):
            del os.environ[name]
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        now = _torch_switches()
        if now == self.torch_switches:
            return
        s = self.torch_switches
        torch.set_default_dtype(s["default_dtype"])
        torch.set_grad_enabled(s["grad"])
        torch.use_deterministic_algorithms(s["deterministic"], warn_only=s["deterministic_warn_only"])
        torch.backends.cudnn.benchmark = s["cudnn_benchmark"]
        torch.backends.cudnn.deterministic = s["cudnn_deterministic"]
        if now["matmul_precision"] != s["matmul_precision"]:
            torch.set_float32_matmul_precision(s["matmul_precision"])


def _torch_switches() -> dict[str, Any]:
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    return {"default_dtype": torch.get_default_dtype(), "grad": torch.is_grad_enabled(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "matmul_precision": torch.get_float32_matmul_precision()}
