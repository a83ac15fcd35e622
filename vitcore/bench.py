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


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure(cfg: RunConfig, timing: Timing) -> dict:
    """Runs on every rank; returns the point (rank 0's numbers, memory = max over ranks)."""
    import torch
    import torch.distributed as dist

    from vitcore import model as model_mod
    from vitcore import train

    s = train.setup(cfg, synthetic_batch=True)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    size = cfg.preset.image_size
    batch = {"pixel_values": torch.randn(cfg.batch_size, 3, size, size, generator=g).to(s.device),
             "labels": torch.randint(0, 3, (cfg.batch_size,), generator=g).to(s.device)}
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(timing.warmup):
        train.train_step(s, batch)
    _sync(s.device)
    windows = []
    for _ in range(timing.repeats):
        t0 = time.perf_counter()
        for _ in range(timing.steps):
            loss = train.train_step(s, batch)
        _sync(s.device)
        windows.append(time.perf_counter() - t0)
    final_loss = train.global_mean(s, loss)
    step_times = [w / timing.steps for w in windows]
    per_gpu = [cfg.batch_size * cfg.dp_size / cfg.world_size / t for t in step_times]
    med = statistics.median(per_gpu)
    mem = torch.zeros(2, dtype=torch.float64, device=s.device)
    if s.device == "cuda":
        mem[0], mem[1] = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    from vitcore.env import environment, peak_flops

    env = environment()
    flops = model_mod.train_flops_per_image(cfg.preset)
    peak = peak_flops(env["gpu_name"])
    point = train.describe(s) | {
        "status": "ok",
        "images_per_s": med,  # per GPU
        "images_per_s_total": med * cfg.world_size,
        "images_per_s_windows": per_gpu,
        "step_time_s": statistics.median(step_times),
        "spread": (max(per_gpu) - min(per_gpu)) / med,
        "repeats": timing.repeats, "steps": timing.steps, "warmup": timing.warmup,
        "peak_mem_allocated_gib": mem[0].item() / GIB if s.device == "cuda" else None,
        "peak_mem_reserved_gib": mem[1].item() / GIB if s.device == "cuda" else None,
        "train_flops_per_image": flops,
        "mfu": (med * flops / peak) if peak else None,
        "final_loss": final_loss,
    } | env
    del s, batch
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
            p = measure(cfg, timing)
        except Exception as e:  # noqa: BLE001 - recorded as a result, the matrix goes on
            if not _is_oom(e):
                raise
            _free()
            p = skeleton(cfg) | {"status": "oom", "error": str(e).splitlines()[0][:300]}
        if dist.get_rank() == 0 and out_path:
            res.append_point(out_path, p)
        points.append(p)
    return points


def skeleton(cfg: RunConfig, **extra) -> dict:
    from vitcore.env import environment

    return {"plugin": cfg.plugin, "family": cfg.spec.family, "precision": cfg.precision,
            "profile": cfg.profile, "model": cfg.model, "batch_size": cfg.batch_size,
            "world_size": cfg.world_size, "images_per_s": None, "peak_mem_allocated_gib": None,
            "peak_mem_reserved_gib": None, "mfu": None} | environment() | extra


def plan(plugins: list[str], batch_sizes: list[int], precisions: list[str] | None, *, profile: str,
         model: str, world_size: int = 1, device: str) -> tuple[list[list[RunConfig]], list[dict]]:
    """The matrix as groups of RunConfigs, plus skipped points with their reason."""
    from vitcore import plugins as reg

    groups, skipped = [], []
    for spec in reg.select(plugins):
        for precision in precisions or [None]:
            try:
                base = RunConfig(plugin=spec.name, precision=precision, profile=profile, model=model,
                                 world_size=max(world_size, spec.min_world_size), device=device,
                                 dataset="embedded")
            except VitcoreError as e:
                skipped.append({"plugin": spec.name, "precision": precision, "reason": str(e)})
                continue
            reason = _unrunnable(spec, base.precision, base.world_size, device)
            if reason:
                skipped.append({"plugin": spec.name, "precision": base.precision, "reason": reason})
                continue
            groups.append([dataclasses.replace(base, batch_size=bs) for bs in batch_sizes])
    return groups, skipped


def _unrunnable(spec, precision, world_size, device) -> str | None:
    import torch

    if device == "cpu" and spec.needs_cuda(precision):
        return f"needs CUDA ({spec.cpu_reason})"
    if device == "cuda" and torch.cuda.device_count() < world_size:
        return f"needs {world_size} GPUs, {torch.cuda.device_count()} present"
    return None


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


def _key(cfg: RunConfig) -> tuple:
    return (cfg.plugin, cfg.precision, cfg.profile, cfg.model, cfg.world_size, cfg.batch_size)
