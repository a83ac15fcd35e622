"""The GPU's own readings of a step: kernel durations and launches from the profiler, the SM clock,
an operator table (--trace), and the test-only injected regressions (docs/gate.md).

Device time is read in a separate short window after a point's timed windows, so the profiler never
perturbs their wall time (vitcore.measure.timing).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from vitcore import VitcoreError
from vitcore.files import write_atomic
from vitcore.measure import host_profile


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sm_clock_mhz() -> int | None:
    try:
        return torch.cuda.clock_rate() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - NVML missing or refused: the clock is simply not recorded
        return None


# --- the profiler ---------------------------------------------------------------------------------
def trace(step, batch, device: str, path: Path | None, steps: int = 5) -> dict:
    """Profile `steps` steps; returns gpu_busy (None on a CPU), the host fields of
    vitcore.measure.host_profile from the same window, and writes the operator table.
    with_stack: Python function events, so host time is attributed to the package that called it;
    the tracer's own cost is in this window's wall time (gpu_busy may read lower for it: not measured on a GPU yet)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device)
    with profile(activities=acts, with_stack=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            with record_function(host_profile.STEP):  # the window host_profile sums over
                step(batch)
        sync(device)
        wall = time.perf_counter() - t0
    avgs = prof.key_averages()
    host = host_profile.summarize(prof.events(), steps, wall)
    busy = None
    if device == "cuda":
        busy = kernel_seconds(avgs) / wall
    if path is not None:
        sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        head = (f"{steps} steps, wall {wall * 1e3:.1f} ms ({wall / steps * 1e3:.2f} ms/step)"
                + (f", GPU busy {busy:.1%}" if busy is not None else "") + "\n"
                + (f"host time by package: {host['host_attribution']}\n" if host["host_attribution"] else ""))
        write_atomic(path, head + avgs.table(sort_by=sort, row_limit=30))
    return {"gpu_busy": busy, "trace": str(path) if path else None} | host


def device_window(step, batch, device: str, steps: int) -> dict:
    """Kernel time, copy time and launches per step over `steps` profiled steps, after the timed
    windows so the profiler never perturbs their wall time. On the H100 the sum of kernel durations
    per step reproduced to 0.2-0.6% across processes while wall time moved 8-50%, and launches per
    step were identical in every window: what the host cannot perturb, the gate compares tightly.
    Host<->device copies are counted apart: their duration depends on the host (gemini_offload's
    device time, copies included, moved 3.7% between processes of unchanged code)."""
    if device != "cuda" or steps < 1:
        return {"device_ms_per_step": None, "copy_ms_per_step": None, "launches_per_step": None,
                "device_sm_clock_mhz": None}
    sync(device)
    clocks = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(batch)
            clocks.append(sm_clock_mhz())  # the host runs ahead: read while the GPU works on the step
        sync(device)
    events = [e for e in prof.key_averages() if _is_device_event(e)]
    copies = [e for e in events if _is_copy(e)]
    clocks = [c for c in clocks if c]
    return {"device_ms_per_step": kernel_seconds([e for e in events if not _is_copy(e)]) * 1e3 / steps,
            "copy_ms_per_step": kernel_seconds(copies) * 1e3 / steps,
            "launches_per_step": sum(e.count for e in events) / steps,
            "device_sm_clock_mhz": statistics.median(clocks) if clocks else None}


def _is_copy(e) -> bool:
    return e.key.startswith(("Memcpy", "Memset"))


def _is_device_event(e) -> bool:
    return e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)


def injected(step, batch, device_pct: float, host_pct: float, device: str):
    """`step` followed by the test-only injected work, sized from the warmed-up step itself: a GPU
    spin (one kernel on the current stream, so it adds exactly that device time) and a host sleep.
    Returns the step and a label with the amounts in ms."""
    if not (device_pct or host_pct):
        return step, ""
    if device_pct and device != "cuda":
        raise VitcoreError("--inject-device-pct needs a CUDA device (it adds GPU kernel time)")
    device_ms = device_window(step, batch, device, 3)["device_ms_per_step"] if device_pct else 0.0
    t0 = time.perf_counter()
    for _ in range(3):
        step(batch)
    sync(device)
    wall_ms = (time.perf_counter() - t0) / 3 * 1e3
    spin_ms, sleep_ms = device_ms * device_pct / 100, wall_ms * host_pct / 100
    cycles = int(spin_ms * _spin_cycles_per_ms()) if spin_ms else 0

    def step_with_regression(b):
        out = step(b)
        if cycles:
            torch.cuda._sleep(cycles)
        if sleep_ms:
            time.sleep(sleep_ms / 1e3)
        return out

    label = ",".join(f"{what}+{pct:g}% ({ms:.2f} ms)" for what, pct, ms in
                     (("device", device_pct, spin_ms), ("host", host_pct, sleep_ms)) if pct)
    return step_with_regression, label


def _spin_cycles_per_ms() -> float:
    """torch.cuda._sleep spins for GPU clock cycles: time a long spin once to convert ms."""
    n = 20_000_000
    torch.cuda._sleep(n // 10)  # load the kernel
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(n)
    end.record()
    end.synchronize()
    return n / start.elapsed_time(end)


def kernel_seconds(avgs) -> float:
    """GPU kernel time in profiler averages, counted as torch's own table total counts it: device
    events only. Operator rows (aten::mm) and user annotations (DistributedDataParallel.forward)
    also carry their kernels' time, so summing every row counted it two or three times."""
    return sum(e.self_device_time_total for e in avgs if _is_device_event(e)) / 1e6


def trace_path(trace_dir, point_name: str) -> Path | None:
    """Where rank 0 writes a point's operator table; None without --trace and on other ranks."""
    if not trace_dir or (dist.is_initialized() and dist.get_rank() != 0):
        return None
    return Path(trace_dir) / f"trace-{point_name}.txt"
