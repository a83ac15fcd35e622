"""Throughput and peak memory of one plugin configuration, and the plugin x batch-size matrix.

Timing: warm-up steps first (compilation, allocator growth, kernel JIT), then `repeats` windows
of `steps` steps each, the device synchronised only at window edges, inputs already on the device.
images/s is the median over windows and `spread` = (max - min) / median.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from pathlib import Path

from vitcore import VitcoreError
from vitcore import results as res
from vitcore.config import RunConfig

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
    trace_dir: str | None = None
    """Also profile 5 steps after timing (torch.profiler): the top operators go to a text file
    there, and the point gets gpu_busy = GPU kernel time / wall time (near 1: GPU-bound; low: the
    host, i.e. Python and kernel launches, limits the step)."""


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _random_batch(preset, batch_size: int, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    size = preset.image_size
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=g).to(device),
            "labels": torch.randint(0, 3, (batch_size,), generator=g).to(device)}


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
    import resource

    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        on_cpu = int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None
    jiffies = [int(x) for x in cpu[:8]]  # user nice system idle iowait irq softirq steal
    return {"steal": jiffies[7], "jiffies": sum(jiffies), "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
            "cpu": on_cpu, "gc_s": _GC_SECONDS[0], "thread_s": time.thread_time()}


def _sm_clock_mhz() -> int | None:
    import torch

    try:
        return torch.cuda.clock_rate() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - NVML missing or refused: the clock is simply not recorded
        return None


def host_noise(before: dict | None, after: dict | None) -> dict:
    """One window's host interference from two host_counters() readings."""
    if before is None or after is None:
        return {}
    total = after["jiffies"] - before["jiffies"]
    return {"steal": (after["steal"] - before["steal"]) / total if total > 0 else 0.0,
            "preempted": after["preempted"] - before["preempted"], "migrated": before["cpu"] != after["cpu"],
            "gc_s": after["gc_s"] - before["gc_s"], "thread_s": after["thread_s"] - before["thread_s"]}


def _timed(step, batch, timing: Timing, device: str, *, freeze_gc: bool = True):
    """Warm-up, then `repeats` windows of `steps` steps; returns (window seconds, last loss, steps,
    warm-up peak memory (allocated, reserved) or None off CUDA, host interference per window).

    Peak memory is read twice: over warm-up and calibration (first steps: DDP's bucket rebuild,
    lazily created optimizer states) and over the timed windows alone (steady state). On an H100 the
    first varied by one fp32 copy of the parameters between runs of the same code (torch_ddp bs32:
    4.97 / 5.29 GiB), so budgets compare the steady-state peak.

    freeze_gc: the plugins' Python side allocates many short-lived objects, so CPython's automatic
    collections (full passes over the million objects torch, transformers and colossalai import)
    land at random inside windows. Collect once, freeze what exists, and keep automatic GC off
    while timing, as torchtitan's training loop does (its GarbageCollection: gc.disable, then a
    collection every N steps)."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if freeze_gc:
        gc.collect()
        gc.freeze()
        gc.disable()
    gc.callbacks.append(_gc_clock)
    try:
        for _ in range(timing.warmup):
            step(batch)
        _sync(device)
        steps = _calibrated_steps(step, batch, timing, device)
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
            _sync(device)
            windows.append(time.perf_counter() - t0)
            noise.append(host_noise(c0, host_counters()) | {"sm_clock_mhz": _sm_clock_mhz()})
            if freeze_gc:
                gc.collect(1)  # young generations only, outside the window
    finally:
        gc.callbacks.remove(_gc_clock)
        if freeze_gc:
            gc.enable()
            gc.unfreeze()
    return windows, loss, steps, warm_mem, noise


def _trace(step, batch, device: str, path: Path | None, steps: int = 5) -> dict:
    """Profile `steps` steps; returns gpu_busy (None on a CPU) and writes the operator table."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step(batch)
        _sync(device)
        wall = time.perf_counter() - t0
    avgs = prof.key_averages()
    busy = None
    if device == "cuda":
        busy = kernel_seconds(avgs) / wall
    if path is not None:
        from vitcore.results import write_atomic

        sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        head = (f"{steps} steps, wall {wall * 1e3:.1f} ms ({wall / steps * 1e3:.2f} ms/step)"
                + (f", GPU busy {busy:.1%}" if busy is not None else "") + "\n")
        write_atomic(path, head + avgs.table(sort_by=sort, row_limit=30))
    return {"gpu_busy": busy, "trace": str(path) if path else None}


def kernel_seconds(avgs) -> float:
    """GPU kernel time in profiler averages, counted as torch's own table total counts it: device
    events only. Operator rows (aten::mm) and user annotations (DistributedDataParallel.forward)
    also carry their kernels' time, so summing every row counted it two or three times."""
    from torch.autograd import DeviceType

    return sum(e.self_device_time_total for e in avgs
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)) / 1e6


def _trace_path(timing: Timing, point_name: str) -> Path | None:
    import torch.distributed as dist

    if not timing.trace_dir or (dist.is_initialized() and dist.get_rank() != 0):
        return None
    return Path(timing.trace_dir) / f"trace-{point_name}.txt"


def _calibrated_steps(step, batch, timing: Timing, device: str) -> int:
    """timing.steps, or more so that a window lasts timing.min_window_s; every rank agrees (the
    maximum), since ranks of one group must run the same number of collectives."""
    import math

    import torch
    import torch.distributed as dist

    n = timing.steps
    if timing.min_window_s > 0:
        t0 = time.perf_counter()
        for _ in range(timing.steps):
            step(batch)
        _sync(device)
        per_step = (time.perf_counter() - t0) / timing.steps
        n = max(n, math.ceil(timing.min_window_s / max(per_step, 1e-9)))
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([n], device=device if device == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n = int(t.item())
    return n


def _cuda_mem(warm_mem) -> list[float]:
    """[peak allocated, peak reserved, steady allocated, steady reserved] in bytes (see _timed)."""
    import torch

    steady = [torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()]
    return [max(w, s) for w, s in zip(warm_mem or steady, steady, strict=True)] + steady


def _stats(windows, images_per_step: float, timing: Timing, preset, mem=None, *, steps: int,
           noise=()) -> dict:
    from vitcore import model as model_mod
    from vitcore.env import environment, peak_flops

    step_times = [w / steps for w in windows]
    per_gpu = [images_per_step / t for t in step_times]
    med = statistics.median(per_gpu)
    env = environment()
    flops = model_mod.train_flops_per_image(preset)
    peak = peak_flops(env["gpu_name"])
    return {
        "status": "ok",
        "images_per_s": med,  # per GPU
        "images_per_s_windows": per_gpu,
        "step_time_s": statistics.median(step_times),
        "spread": (max(per_gpu) - min(per_gpu)) / med,
        "repeats": timing.repeats, "steps": steps, "warmup": timing.warmup,
        "min_window_s": timing.min_window_s,
        "peak_mem_allocated_gib": mem[0] / GIB if mem else None,
        "peak_mem_reserved_gib": mem[1] / GIB if mem else None,
        "steady_mem_allocated_gib": mem[2] / GIB if mem else None,
        "steady_mem_reserved_gib": mem[3] / GIB if mem else None,
        "train_flops_per_image": flops,
        "mfu": (med * flops / peak) if peak else None,
        # per window (host_counters): share of the machine's CPU time stolen by the hypervisor,
        # involuntary context switches, GC seconds, the timing thread's CPU seconds, SM clock
        **{f"host_{k}_windows": [n.get(k) for n in noise] or None
           for k in ("steal", "preempted", "gc_s", "thread_s", "sm_clock_mhz")},
        "host_migrations": sum(bool(n.get("migrated")) for n in noise) if noise else None,
    } | env


def measure(cfg: RunConfig, timing: Timing) -> dict:
    """Runs on every rank; returns the point (rank 0's numbers, memory = max over ranks)."""
    import torch
    import torch.distributed as dist

    from vitcore import train

    s = train.setup(cfg, synthetic_batch=True)
    batch = _random_batch(cfg.preset, cfg.batch_size, cfg.seed, s.device)
    def step(b):
        return train.train_step(s, b)

    windows, loss, steps, warm_mem, noise = _timed(step, batch, timing, s.device, freeze_gc=cfg.freeze_gc)
    traced = {}
    if timing.trace_dir:
        name = f"{cfg.plugin}-{cfg.precision}-{cfg.profile}-ws{cfg.world_size}-bs{cfg.batch_size}"
        traced = _trace(step, batch, s.device, _trace_path(timing, name + (f"-{cfg.variant}" if cfg.variant else "")))
    final_loss = train.global_mean(s, loss)
    mem = torch.zeros(4, dtype=torch.float64, device=s.device)
    if s.device == "cuda":
        mem[:] = torch.tensor(_cuda_mem(warm_mem), dtype=torch.float64)
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    point = train.describe(s) | _stats(windows, cfg.batch_size * cfg.dp_size / cfg.world_size, timing,
                                       cfg.preset, mem.tolist() if s.device == "cuda" else None,
                                       steps=steps, noise=noise)
    point |= {"images_per_s_total": point["images_per_s"] * cfg.world_size, "final_loss": final_loss,
              "variant": cfg.variant, "base_precision": cfg.extra.get("base_precision", cfg.precision)} | traced
    s = batch = None  # release before _free() empties the CUDA cache
    _free()
    return point


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reference:
    """A plain-PyTorch loop as an expert would write it by hand: no plugin, no Booster, inputs on
    the device, optionally torch.compile.

    The default is the issue's reference (bf16 autocast, SDPA, fused AdamW). `mirrors` names the
    registry entry a *bare* loop reproduces (same precision, optimizer and DDP wrapper), so the
    report can state the harness's own overhead over a hand-written loop."""

    model: str
    batch_size: int
    compile: bool = False
    precision: str = "bf16"  # bf16 / fp16 autocast (fp16 with a GradScaler) or fp32
    fused: bool = True  # fused AdamW kernel on CUDA
    ddp: bool = False
    mirrors: str | None = None
    device: str = "auto"
    seed: int = 42
    lr: float = 3e-4
    weight_decay: float = 0.1
    timeout_s: float = 1800.0
    world_size: int = 1
    profile: str = "reference"
    variant: str = ""

    @property
    def plugin(self) -> str:
        if self.mirrors:
            return f"bare_{self.mirrors}"
        return "reference_compiled" if self.compile else "reference_eager"


def bare_loop(plugin: str, *, model: str, batch_size: int, device: str) -> Reference:
    """The hand-written twin of a registry entry (harness-overhead measurement)."""
    from vitcore.config import PROFILES

    precision = {"torch_ddp": "fp32", "torch_ddp_fp16": "fp16"}[plugin]
    return Reference(model=model, batch_size=batch_size, precision=precision, ddp=True, mirrors=plugin,
                     fused=PROFILES["fast"]["fused_optimizer"], device=device, profile="fast")


BARE_LOOPS = ("torch_ddp", "torch_ddp_fp16")


def measure_reference(ref: Reference, timing: Timing) -> dict:
    import torch
    import torch.distributed as dist

    from vitcore import data as data_mod
    from vitcore import model as model_mod
    from vitcore.launch import resolve_device
    from vitcore.train import adamw

    device = resolve_device(ref.device)
    torch.manual_seed(ref.seed)
    preset = model_mod.get_preset(ref.model)
    model, weights = model_mod.build_model(preset, labels=data_mod.LABELS, attention="sdpa", weights="random")
    model = model.to(device)
    # AdamW maths built as the suite builds it (train.adamw), so a bare twin's optimizer is exactly its plugin's
    opt = adamw(model.parameters(), lr=ref.lr, weight_decay=ref.weight_decay, fused=ref.fused and device == "cuda")
    if ref.ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                          if device == "cuda" else None)
    fwd = torch.compile(model) if ref.compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ref.precision)
    scaler = torch.amp.GradScaler(device) if ref.precision == "fp16" else None

    def step(batch):
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = fwd(**batch).loss
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    batch = _random_batch(preset, ref.batch_size, ref.seed, device)
    windows, _, steps, warm_mem, noise = _timed(step, batch, timing, device)
    mem = _cuda_mem(warm_mem) if device == "cuda" else None
    traced = _trace(step, batch, device, _trace_path(timing, f"{ref.plugin}-bs{ref.batch_size}")) if timing.trace_dir else {}
    point = {"plugin": ref.plugin, "family": "reference", "precision": ref.precision, "profile": ref.profile,
             "variant": ref.variant, "model": ref.model, "attention": "sdpa", "grad_checkpoint": False,
             "compile": ref.compile, "fused_optimizer": ref.fused and device == "cuda", "ddp": ref.ddp,
             "mirrors": ref.mirrors, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
             "batch_size": ref.batch_size, "device_kind": device,
             "dataset": "synthetic-tensors (random pixels on the device)", "weights": weights}
    point |= _stats(windows, ref.batch_size, timing, preset, mem, steps=steps, noise=noise) | traced
    model = opt = fwd = batch = None
    _free()
    return point


def _free():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_group(cfgs: list[RunConfig], timing: Timing, out_path: str | None) -> list[dict]:
    """One (plugin, precision) at several batch sizes in one process group. An OOM point is a
    result and the group goes on; every finished point is appended to out_path at once."""
    import torch.distributed as dist

    points = []
    for cfg in cfgs:
        try:
            p = measure_reference(cfg, timing) if isinstance(cfg, Reference) else measure(cfg, timing)
        except Exception as e:  # noqa: BLE001 - recorded as a result, the matrix goes on
            if _is_oom(e):
                status = "oom"
            elif dist.get_world_size() == 1:
                # One process: nothing can hang on a collective it skipped, so an option the plugin
                # does not tolerate (e.g. torch.compile) is a result too.
                status = "error"
            else:
                raise
            _free()
            p = skeleton(cfg) | {"status": status, "error": _first_line(e)}
        if dist.get_rank() == 0 and out_path:
            res.append_point(out_path, p)
        points.append(p)
    return points


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def skeleton(cfg, **extra) -> dict:
    from vitcore.env import environment

    return {"plugin": cfg.plugin, "family": "reference" if isinstance(cfg, Reference) else cfg.spec.family,
            "precision": cfg.precision,
            "profile": cfg.profile, "model": cfg.model, "batch_size": cfg.batch_size,
            "world_size": cfg.world_size, "variant": cfg.variant, "images_per_s": None, "peak_mem_allocated_gib": None,
            "peak_mem_reserved_gib": None, "steady_mem_allocated_gib": None, "steady_mem_reserved_gib": None,
            "mfu": None} | environment() | extra


def plan(plugins: list[str], batch_sizes: list[int], precisions: list[str] | None, *, profile: str,
         model: str, world_size: int = 1, device: str, ablate: bool = False, options: dict | None = None
         ) -> tuple[list[list[RunConfig]], list[dict]]:
    """The matrix as groups of RunConfigs (one process group each), plus skipped points with their
    reason. ablate: each group also holds the profile with one option flipped at a time. options:
    profile options set for every point (e.g. {"freeze_gc": True}); they label the points' variant,
    so they never mix with, or become budgets of, the profile's own points."""
    options = options or {}
    label = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    from vitcore import plugins as reg

    groups, skipped = [], []
    for spec in reg.select(plugins):
        for precision in precisions or [None]:
            try:
                base = RunConfig(plugin=spec.name, precision=precision, profile=profile, model=model,
                                 world_size=max(world_size, spec.min_world_size), device=device,
                                 dataset="embedded", variant=label, **options)
            except VitcoreError as e:
                skipped.append({"plugin": spec.name, "precision": precision, "reason": str(e)})
                continue
            reason = reg.unrunnable_reason(spec, base.precision, base.world_size, device)
            if reason:
                skipped.append({"plugin": spec.name, "precision": base.precision, "reason": reason})
                continue
            variants = [base] + (ablations(base, device) if ablate else [])
            groups.append([dataclasses.replace(v, batch_size=bs) for v in variants for bs in batch_sizes])
    return groups, skipped


def ablations(base: RunConfig, device: str) -> list[RunConfig]:
    """`base` with one profile option flipped at a time, where the option means something for this
    plugin here; each labelled by its variant (e.g. "compile=True")."""
    flips = {"attention": "eager" if base.attention == "sdpa" else "sdpa",
             "grad_checkpoint": not base.grad_checkpoint,
             "freeze_gc": not base.freeze_gc}
    if device == "cuda":  # torch.compile on a CPU times minutes of C++ compilation, not the plugin
        flips["compile"] = not base.compile
    if base.spec.optimizer == "adamw" and device == "cuda":  # HybridAdam is always fused
        flips["fused_optimizer"] = not base.fused_optimizer
    if base.spec.plugin_kernels:
        flips["plugin_kernels"] = not base.plugin_kernels
    out = [dataclasses.replace(base, variant=f"{k}={v}", **{k: v}) for k, v in flips.items()]
    for other in ("bf16", "fp16"):
        if base.precision != "fp32" and other != base.precision and other in base.spec.precisions:
            out.append(dataclasses.replace(base, precision=other, variant=f"precision={other}",
                                           extra={"base_precision": base.precision}))
    return out


def reference_groups(batch_sizes, *, model: str, device: str, bare: tuple[str, ...] = ()) -> tuple[list, list[dict]]:
    """The plain-PyTorch reference, eager and compiled (compiled only on CUDA), and the bare
    hand-written twins of the entries in `bare`."""
    groups = [[Reference(model=model, batch_size=bs, compile=False, device=device) for bs in batch_sizes]]
    skipped = []
    if device == "cuda":
        groups.append([Reference(model=model, batch_size=bs, compile=True, device=device) for bs in batch_sizes])
    else:
        skipped.append({"plugin": "reference_compiled", "precision": "bf16",
                        "reason": "torch.compile on a CPU measures minutes of C++ compilation per shape, "
                                  "not the plugins; run on a GPU"})
    for name in bare:
        loops = [bare_loop(name, model=model, batch_size=bs, device=device) for bs in batch_sizes]
        if device == "cpu" and loops[0].precision != "fp32":
            skipped.append({"plugin": loops[0].plugin, "precision": loops[0].precision,
                            "reason": "fp16 autocast with a GradScaler needs CUDA"})
            continue
        groups.append(loops)
    return groups, skipped


def run_matrix(groups: list[list[RunConfig]], timing: Timing, out_dir, *, resume: bool = False,
               progress: bool = True) -> list[dict]:
    """Measure every group in its own process group (fresh memory statistics, and a crash ends only
    that group). Returns all points in the results file, old (resumed) and new."""
    from vitcore import launch

    out_dir = Path(out_dir)
    path = out_dir / "points.jsonl"
    if not resume and path.exists():
        raise VitcoreError(f"{path} exists; pass --resume to continue it or choose another --out")
    done = {res.point_key(p) for p in res.read_points(path)}
    todo = [[c for c in g if _key(c) not in done] for g in groups]
    todo = [g for g in todo if g]
    n = sum(len(g) for g in todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="point", desc="bench")
    try:
        for group in todo:
            c0 = group[0]
            if bar is not None:
                bar.set_postfix_str(f"{c0.plugin} {c0.precision}")
            try:
                launch.spawn(measure_group, (group, timing, str(path)), world_size=c0.world_size,
                             device=launch.resolve_device(c0.device), timeout_s=c0.timeout_s)
            except VitcoreError as e:
                finished = {res.point_key(p) for p in res.read_points(path)}
                for c in group:
                    if _key(c) not in finished:
                        res.append_point(path, skeleton(c, status="error", error=str(e)[-800:]))
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    return res.read_points(path)


def group_key(group) -> tuple:
    return tuple(_key(c) for c in group)


def _key(cfg) -> tuple:
    """A planned point's identity, by the same rule as a measured one's (results.point_key)."""
    return res.point_key({k: getattr(cfg, k) for k in
                          ("plugin", "precision", "profile", "model", "world_size", "batch_size", "variant")})
