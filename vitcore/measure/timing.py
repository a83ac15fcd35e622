"""How one point is timed: windows, calibration, host interference, peak memory (the profiler's readings: vitcore.measure.profiling).

Warm-up steps first (compilation, allocator growth, kernel JIT), then `repeats` windows of `steps`
steps each, the device synchronised only at window edges, inputs already on the device. images/s is
the median over windows and `spread` = (max - min) / median. `measured_fields` turns the windows
into the point's measured fields (declared in vitcore.spec.points); `unmeasured_fields` is the same
point with nothing measured (an OOM, an error).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import resource
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from vitcore.inputs import model as model_mod
from vitcore.measure.profiling import device_window, injected, sm_clock_mhz, sync
from vitcore.processes import compat
from vitcore.spec.env import environment, peak_flops
from vitcore.spec.points import OBSERVED, observed, process_medians

GIB = 2**30


@dataclasses.dataclass(kw_only=True)
class Timing:
    warmup: int = 5
    steps: int = 20
    repeats: int = 5
    min_window_s: float = 0.0
    """Calibration (as pytest-benchmark's min_time): after warm-up, one untimed window sets the
    steps per window so that each window lasts at least this long. Host jitter (measured: 10-48%
    between 0.4 s windows of launch-bound runs on an H100 host) averages out over longer windows."""
    device_steps: int = 5
    """Steps profiled after the timed windows for device time and launches per step (CUDA only)."""
    inject_device_pct: float = 0.0
    """Test only: after every step, a GPU spin kernel lasting this percentage of the step's own device
    time (measured after warm-up): an injected device regression."""
    inject_host_pct: float = 0.0
    """Test only: after every step, the host sleeps this percentage of the step's wall time (measured
    after warm-up): an injected host regression."""
    trace_dir: str | None = None
    """Also profile 5 steps after timing (torch.profiler): the top operators go to a text file
    there, and the point gets gpu_busy = GPU kernel time / wall time (near 1: GPU-bound; low: the
    host, i.e. Python and kernel launches, limits the step) and the host fields of
    vitcore.measure.host_profile (host time per step by package and upstream function)."""


class Timed(NamedTuple):
    """What `timed` returns."""

    windows: list[float]  # seconds per window
    loss: object  # the last step's loss
    steps: int  # steps per window (after calibration)
    warm_mem: tuple[int, int] | None  # peak (allocated, reserved) bytes over warm-up; None off CUDA
    noise: list[dict]  # host interference per window (host_noise, plus the SM clock)
    device: dict  # device_window's fields: device ms and launches per step (None off CUDA)
    injected: str  # the injected regression, in ms per step ("" without one)
    first_step_s: float | None = None  # the first step's wall time (compilation, lazy init); None without warm-up


def random_batch(preset, batch_size: int, seed: int, device: str) -> dict:
    """One batch of random pixels and labels, already on the device (the benchmark's input)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    size = preset.image_size
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=g).to(device),
            "labels": torch.randint(0, 3, (batch_size,), generator=g).to(device)}


def settle_collectives() -> None:
    """Let the NCCL process group free the tensors its finished collectives still hold.

    With TORCH_NCCL_AVOID_RECORD_STREAMS (torch's default) ProcessGroupNCCL keeps a reference to the
    tensors of every async collective until work.wait(); for work nobody waits on, its watchdog
    thread moves them to a shelf that the next call into the process group on the main thread
    empties (ProcessGroupNCCL.hpp, shelvesToUnstash_). Gemini reduces asynchronously, so the
    previous point's chunks stayed allocated into the next point: on an H100, 0.549 GiB when gemini
    bs128 started after bs32, none of it reachable from Python; gemini bs128's steady peak then read
    9.485 GiB instead of 9.000 in some processes (0.063 GiB held and 9.000 since). So: wait for the
    GPU, give the watchdog (it polls every 100 ms) time to see the work finished, then make one
    call into the group. Every rank of the group must call this at the same point."""
    if not dist.is_initialized() or dist.get_backend() != "nccl":
        return
    torch.cuda.synchronize()
    time.sleep(0.3)
    dist.barrier(device_ids=[torch.cuda.current_device()])
    torch.cuda.synchronize()


def release_memory() -> None:
    """Free what the last point held, so the next one's peak starts from nothing."""
    compat.clear_memoized()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- host interference ----------------------------------------------------------------------------
_GC_SECONDS = [0.0, 0.0]  # [collector time so far, start of the running collection]


def _gc_clock(phase, _info):
    now = time.perf_counter()
    if phase == "start":
        _GC_SECONDS[1] = now
    else:
        _GC_SECONDS[0] += now - _GC_SECONDS[1]


def host_counters() -> dict | None:
    """Cumulative host counters, read at a window's edges; None off Linux.

    Host-bound plugins (ZeRO and Gemini bookkeeping, kernel launches) time the CPU, not the GPU, and
    their windows spread 10-50% on an H100 host. Per window this says where the time went: the
    hypervisor running someone else on the machine's vCPUs (steal), other threads preempting ours,
    Python's garbage collector, the timing thread's own CPU time (wall minus it: waiting on the GPU
    or a lock), and the GPU's SM clock at the window's end. On the lent H100 none of the first four
    explained the spread and the clock held; the slow windows' own CPU seconds grew with them
    (README, "Performance tests against the budgets")."""
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        on_cpu = int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None
    jiffies = [int(x) for x in cpu[:8]]  # user nice system idle iowait irq softirq steal
    return {"steal": jiffies[7], "jiffies": sum(jiffies), "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
            "cpu": on_cpu, "gc_s": _GC_SECONDS[0], "thread_s": time.thread_time()}


def host_noise(before: dict | None, after: dict | None) -> dict:
    """One window's host interference from two host_counters() readings."""
    if before is None or after is None:
        return {}
    total = after["jiffies"] - before["jiffies"]
    return {"steal": (after["steal"] - before["steal"]) / total if total > 0 else 0.0,
            "preempted": after["preempted"] - before["preempted"], "migrated": before["cpu"] != after["cpu"],
            "gc_s": after["gc_s"] - before["gc_s"], "thread_s": after["thread_s"] - before["thread_s"]}


# --- the timed loop -------------------------------------------------------------------------------
def timed(step, batch, timing: Timing, device: str, *, freeze_gc: bool = True) -> Timed:
    """Warm-up, then `repeats` windows of `steps` steps (see Timed).

    Peak memory is read twice: over warm-up and calibration (first steps: DDP's bucket rebuild,
    lazily created optimizer states) and over the timed windows alone (steady state). On an H100 the
    first varied by one fp32 copy of the parameters between runs of the same code (torch_ddp bs32:
    4.97 / 5.29 GiB), so budgets compare the steady-state peak.

    freeze_gc: the plugins' Python side allocates many short-lived objects, so CPython's automatic
    collections (full passes over the million objects torch, transformers and colossalai import)
    land at random inside windows. Collect once, freeze what exists, and keep automatic GC off
    while timing, as torchtitan's training loop does (its GarbageCollection: gc.disable, then a
    collection every N steps)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if freeze_gc:
        gc.collect()
        gc.freeze()
        gc.disable()
    gc.callbacks.append(_gc_clock)
    try:
        first_step_s = None
        for i in range(timing.warmup):
            t0 = time.perf_counter()
            step(batch)
            if i == 0:  # torch.compile compiles here: shown apart from the steady throughput
                sync(device)
                first_step_s = time.perf_counter() - t0
        sync(device)
        step, label = injected(step, batch, timing.inject_device_pct, timing.inject_host_pct, device)
        steps = calibrated_steps(step, batch, timing, device)
        warm_mem = None
        if device == "cuda":
            warm_mem = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
        windows, noise = [], []
        for _ in range(timing.repeats):
            c0 = host_counters()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = step(batch)
            sync(device)
            windows.append(time.perf_counter() - t0)
            noise.append(host_noise(c0, host_counters()) | {"sm_clock_mhz": sm_clock_mhz()})
            if freeze_gc:
                gc.collect(1)  # young generations only, outside the window
    finally:
        gc.callbacks.remove(_gc_clock)
        if freeze_gc:
            gc.enable()
            gc.unfreeze()
    return Timed(windows, loss, steps, warm_mem, noise, device_window(step, batch, device, timing.device_steps), label,
                 first_step_s)


def calibrated_steps(step, batch, timing: Timing, device: str) -> int:
    """timing.steps, or more so that a window lasts timing.min_window_s; every rank agrees (the
    maximum), since ranks of one group must run the same number of collectives."""
    n = timing.steps
    if timing.min_window_s > 0:
        t0 = time.perf_counter()
        for _ in range(timing.steps):
            step(batch)
        sync(device)
        per_step = (time.perf_counter() - t0) / timing.steps
        n = max(n, math.ceil(timing.min_window_s / max(per_step, 1e-9)))
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([n], device=device if device == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n = int(t.item())
    return n


# --- memory and the point's measured fields -------------------------------------------------------
def cuda_mem(warm_mem) -> list[float]:
    """[peak allocated, peak reserved, steady allocated, steady reserved] in bytes (see timed)."""
    steady = [torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()]
    return [max(w, s) for w, s in zip(warm_mem or steady, steady, strict=True)] + steady


_MEM_FIELDS = ("peak_mem_allocated_gib", "peak_mem_reserved_gib", "steady_mem_allocated_gib",
               "steady_mem_reserved_gib")  # in cuda_mem's order


def measured_fields(run: Timed, *, images_per_step: float, timing: Timing, preset, mem=None) -> dict:
    """The point's measured fields from its windows; mem: cuda_mem's four byte counts, or None."""
    step_times = [w / run.steps for w in run.windows]
    per_gpu = [images_per_step / t for t in step_times]
    med = statistics.median(per_gpu)
    env = environment()
    flops = model_mod.train_flops_per_image(preset)
    peak = peak_flops(env["gpu_name"])
    noise = run.noise
    dev_ms = run.device.get("device_ms_per_step")
    copy_ms = run.device.get("copy_ms_per_step") or 0.0
    return {
        "status": "ok",
        "images_per_s": med,  # per GPU
        "images_per_s_windows": per_gpu,
        "step_time_s": statistics.median(step_times),
        **run.device,
        "images_per_s_process_medians": [med],
        "host_ms_per_step": statistics.median(step_times) * 1e3 - dev_ms - copy_ms if dev_ms is not None else None,
        "processes": 1,
        "injected": run.injected,
        "first_step_s": run.first_step_s,
        "spread": (max(per_gpu) - min(per_gpu)) / med,
        "repeats": timing.repeats, "steps": run.steps, "warmup": timing.warmup,
        "min_window_s": timing.min_window_s,
        **{name: mem[i] / GIB if mem else None for i, name in enumerate(_MEM_FIELDS)},
        "train_flops_per_image": flops,
        "mfu": (med * flops / peak) if peak else None,
        # per window (host_counters): share of the machine's CPU time stolen by the hypervisor,
        # involuntary context switches, GC seconds, the timing thread's CPU seconds, SM clock
        **{f"host_{k}_windows": [n.get(k) for n in noise] or None
           for k in ("steal", "preempted", "gc_s", "thread_s", "sm_clock_mhz")},
        "host_migrations": sum(bool(n.get("migrated")) for n in noise) if noise else None,
    } | env


def pool(runs: list[dict]) -> dict:
    """One point from the same point measured in several processes: windows pooled (median and
    spread over all of them), device time averaged, launches and memory at their maximum."""
    ok = [p for p in runs if p.get("status") == "ok"]
    if len(ok) < len(runs) or len(runs) == 1:
        return next((p for p in runs if p.get("status") != "ok"), runs[0]) | {"processes": len(ok) or 1}
    windows = [w for p in ok for w in p["images_per_s_windows"]]
    med = statistics.median(windows)
    out = ok[0] | {"images_per_s_windows": windows, "images_per_s": med, "spread": (max(windows) - min(windows)) / med,
                   "images_per_s_process_medians": [m for p in ok for m in process_medians(p)],
                   "processes": sum(p.get("processes") or 1 for p in ok),
                   "step_time_s": statistics.median(p["step_time_s"] for p in ok)}
    out["mfu"] = ok[0]["mfu"] and ok[0]["mfu"] * med / ok[0]["images_per_s"]
    if ok[0].get("images_per_s_total") is not None:
        out["images_per_s_total"] = med * ok[0]["world_size"]
    for name in ("device_ms_per_step", "copy_ms_per_step", "host_ms_per_step", "device_sm_clock_mhz"):
        vals = [p[name] for p in ok if p.get(name) is not None]
        out[name] = statistics.fmean(vals) if vals else None
    for name in ("launches_per_step", "mem_held_at_start_gib", *_MEM_FIELDS):
        vals = [p[name] for p in ok if p.get(name) is not None]
        out[name] = max(vals) if vals else None
    out["observed"] = {name: [v for p in ok for v in observed(p).get(name, [])] for name in OBSERVED}
    out["steady_mem_allocated_gib_processes"] = [  # which processes took which memory state
        v for p in ok for v in (p.get("steady_mem_allocated_gib_processes") or [p.get("steady_mem_allocated_gib")])
        if v is not None]
    return out


def unmeasured_fields(item, *, family: str, **extra) -> dict:
    """A planned point (anything with the identity attributes) with nothing measured: the record
    of an OOM or an error, with `extra` (status, error) on top."""
    return {"plugin": item.plugin, "family": family, "precision": item.precision, "profile": item.profile,
            "model": item.model, "batch_size": item.batch_size, "world_size": item.world_size,
            "variant": item.variant, "images_per_s": None, **dict.fromkeys(_MEM_FIELDS), "mfu": None,
            } | environment() | extra
