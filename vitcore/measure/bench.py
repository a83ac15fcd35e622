"""The plugin x batch-size matrix: plan it, measure each group in its own process group, write points.

A planned point is anything with the identity attributes (plugin, precision, profile, model,
world_size, batch_size, variant; plus device and timeout_s for its group) that can `measure(timing)`
itself and give its `skeleton(**extra)` when that fails. A RunConfig is measured through its Booster
plugin here (`measure`); the plain-PyTorch reference and the twins bring their own
(vitcore.measure.reference). How a point is timed is vitcore.measure.timing's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from vitcore import VitcoreError, files
from vitcore.measure import progress as console
from vitcore.measure.profiling import trace, trace_path
from vitcore.measure.timing import (
    Timing,
    cuda_mem,
    measured_fields,
    pool,
    random_batch,
    release_memory,
    settle_collectives,
    timed,
    unmeasured_fields,
)
from vitcore.processes import launch
from vitcore.spec import plugins as reg
from vitcore.spec import points
from vitcore.spec.config import ABLATE, RunConfig, profile_plugin_options, split_options
from vitcore.store import results as res
from vitcore.training import compiled, train


class Measurable(Protocol):
    """What the run loop asks of a planned point besides its identity attributes."""

    def measure(self, timing: Timing) -> dict: ...

    def skeleton(self, **extra) -> dict: ...


def measure(cfg: RunConfig, timing: Timing) -> dict:
    """Runs on every rank; returns the point (rank 0's numbers, memory = max over ranks)."""
    s = train.setup(cfg, synthetic_batch=True)
    batch = random_batch(cfg.preset, cfg.batch_size, cfg.seed, s.device)
    def step(b):
        return train.train_step(s, b)

    run = timed(step, batch, timing, s.device, freeze_gc=cfg.freeze_gc)
    compiled.require(s)  # an uncompiled step's numbers must not stand for the compiled form
    traced = {}
    if timing.trace_dir:
        name = f"{cfg.plugin}-{cfg.precision}-{cfg.profile}-ws{cfg.world_size}-bs{cfg.batch_size}"
        traced = trace(step, batch, s.device, trace_path(timing.trace_dir, name + (f"-{cfg.variant}" if cfg.variant else "")))
    final_loss = train.global_mean(s, run.loss)
    mem = torch.zeros(4, dtype=torch.float64, device=s.device)
    if s.device == "cuda":
        mem[:] = torch.tensor(cuda_mem(run.warm_mem), dtype=torch.float64)
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    point = train.describe(s) | measured_fields(run, images_per_step=cfg.batch_size * cfg.dp_size / cfg.world_size,
                                                timing=timing, preset=cfg.preset,
                                                mem=mem.tolist() if s.device == "cuda" else None)
    point |= {"images_per_s_total": point["images_per_s"] * cfg.world_size, "final_loss": final_loss,
              "variant": cfg.variant, "base_precision": cfg.extra.get("base_precision", cfg.precision),
              "plugin_options": dict(cfg.plugin_options)} | traced
    s = batch = run = None  # release before release_memory() empties the CUDA cache
    release_memory()
    return point


def skeleton(cfg: RunConfig, **extra) -> dict:
    """A RunConfig's point with nothing measured (an OOM or an error)."""
    spec = cfg.spec
    return unmeasured_fields(cfg, family=spec.family, compile=cfg.compile,
                             compile_plan=compiled.describe(spec, cfg.compile), **extra)


@dataclasses.dataclass(frozen=True)
class PluginPoint:
    """A RunConfig as a planned point: measured through its Booster plugin (this module's measure
    and skeleton, looked up when called, so a test can replace them)."""

    cfg: RunConfig

    def measure(self, timing: Timing) -> dict:
        return measure(self.cfg, timing)

    def skeleton(self, **extra) -> dict:
        return skeleton(self.cfg, **extra)


def measurable(item) -> Measurable:
    """RunConfig lives below this module (config.py) and knows nothing of measuring: adapt it."""
    return PluginPoint(item) if isinstance(item, RunConfig) else item


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_group(items: list, timing: Timing, out_path: str | None) -> list[dict]:
    """One (plugin, precision) at several batch sizes in one process group. An OOM point is a
    result and the group goes on; every finished point is appended to out_path at once."""
    measured = []
    for item in map(measurable, items):
        settle_collectives()
        release_memory()
        held = _allocated_gib()
        try:
            p = item.measure(timing)
        except Exception as e:  # noqa: BLE001 - recorded as a result, the matrix goes on
            if _is_oom(e):
                status = "oom"
            elif dist.get_world_size() == 1:
                # One process: nothing can hang on a collective it skipped, so an option the plugin
                # does not tolerate (e.g. torch.compile) is a result too.
                status = "error"
            else:
                raise
            release_memory()
            p = item.skeleton(status=status, error=launch.first_line(e))
        p["mem_held_at_start_gib"] = held
        if dist.get_rank() == 0 and out_path:
            res.append_point(out_path, p)
        measured.append(p)
    return measured


def _allocated_gib() -> float | None:
    """CUDA tensor memory allocated now, after release_memory(): a previous point's tensors that
    outlived it (gemini bf16 bs128's steady peak took 9.000 or 9.485 GiB only in processes that
    measured bs32 first: docs/gate.md)."""
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None


def plan(plugins: list[str], batch_sizes: list[int], precisions: list[str] | None, *, profile: str,
         model: str, world_size: int = 1, device: str, ablate: bool | str | None = False,
         options: dict | None = None) -> tuple[list[list[RunConfig]], list[dict]]:
    """The matrix as groups of RunConfigs (one process group each), plus skipped points with their
    reason. ablate: each group also holds the profile with one option flipped at a time (True or
    "all"; "profile": the profile's options and precision only; "plugin": the plugin's own options
    only, config.ABLATE). options: profile options and plugin options (config.parse_options) set
    for every point; they label the points' variant, so they never mix with, or become budgets of,
    the profile's own points. An entry that lacks a plugin option given is skipped, saying so."""
    which = "all" if ablate is True else (ablate or None)
    if which is not None and which not in ABLATE:
        raise VitcoreError(f"unknown ablation {which!r}; valid: {', '.join(ABLATE)}")
    profile_options, plugin_options = split_options(options or {})
    label = ",".join(f"{k}={v}" for k, v in sorted((options or {}).items()))
    groups, skipped = [], []
    for spec in reg.select(plugins):
        for precision in precisions or [None]:
            try:
                base = RunConfig(plugin=spec.name, precision=precision, profile=profile, model=model,
                                 world_size=max(world_size, spec.min_world_size), device=device,
                                 dataset="embedded", variant=label, plugin_options=plugin_options,
                                 **profile_options)
            except VitcoreError as e:
                skipped.append({"plugin": spec.name, "precision": precision, "reason": str(e)})
                continue
            reason = reg.unrunnable_reason(spec, base.precision, base.world_size, device)
            if reason:
                skipped.append({"plugin": spec.name, "precision": base.precision, "reason": reason})
                continue
            variants = [base] + (ablations(base, device, which) if which else [])
            groups.append([dataclasses.replace(v, batch_size=bs) for v in variants for bs in batch_sizes])
    return groups, skipped


def ablations(base: RunConfig, device: str, which: str = "all") -> list[RunConfig]:
    """`base` with one option flipped at a time, where the option means something for this plugin
    here; each labelled by its variant (e.g. "compile=True", "overlap_communication=False").
    which: "profile" (the profile's options and the precision), "plugin" (the entry's own options,
    PluginSpec.tunables), "compile" (compiled beside eager: issue 29) or "all"."""
    if which == "compile":
        return [_compile_flip(base)] if _compiles_here(base, device) else []
    out = _profile_flips(base, device) if which in ("all", "profile") else []
    if which in ("all", "plugin"):
        spec = base.spec
        chosen = profile_plugin_options(spec, base.profile, cuda=device == "cuda")
        for t in spec.tunables:
            # flipped to the ablation value, or back to upstream's where the profile chose the ablation
            # value; not flipped: no ablation value, set by --option, or CUDA-only here
            now = spec.value(t.name)
            flip = t.ablate if now != t.ablate else t.default
            if (t.ablate is None or flip == now or (t.needs_cuda and device != "cuda")
                    or (t.name in base.plugin_options and chosen.get(t.name, object()) != now)):
                continue
            out.append(dataclasses.replace(base, variant=f"{t.name}={flip}",
                                           plugin_options=base.plugin_options | {t.name: flip}))
    return out


def _compiles_here(base: RunConfig, device: str) -> bool:
    """inductor on a CPU times minutes of C++ compilation, not the plugin; aot_eager and eager trace only."""
    return device == "cuda" or base.spec.value("compile_backend") != "inductor"


def _compile_flip(base: RunConfig) -> RunConfig:
    return dataclasses.replace(base, variant=f"compile={not base.compile}", compile=not base.compile)


def _profile_flips(base: RunConfig, device: str) -> list[RunConfig]:
    flips = {"attention": "eager" if base.attention == "sdpa" else "sdpa",
             "grad_checkpoint": not base.grad_checkpoint,
             "freeze_gc": not base.freeze_gc}
    if _compiles_here(base, device):
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


def run_matrix(groups: list[list], timing: Timing, out_dir, *, resume: bool = False,
               progress: bool = True, processes: int = 1, output: launch.WorkerOutput | None = None,
               stream=None) -> list[dict]:
    """Measure every group (RunConfigs, or reference.Reference) in its own process group (fresh
    memory statistics, and a crash ends only that group), `processes` times in separate processes
    whose windows are pooled (timing.pool). progress: one line per finished point and a bar
    (vitcore.measure.progress) on `stream`; output: where the workers' own stdout and stderr go. Returns all
    points in the results file, old (resumed) and new."""
    path = Path(out_dir) / "points.jsonl"
    if not resume and path.exists():
        raise VitcoreError(f"{path} exists; pass --resume to continue it or choose another --out")
    done = {points.key(p) for p in res.read_points(path)}
    todo = [[c for c in g if _key(c) not in done] for g in groups]
    todo = [g for g in todo if g]
    board = console.Progress(path, [_key(c) for g in todo for c in g], stream=stream) if progress else None
    try:
        for group in todo:
            if board is not None:
                board.group_started()
            try:
                _run_group(group, timing, path, processes, output)
            finally:
                if board is not None:
                    board.group_ended()
    finally:
        if board is not None:
            board.close()
    return res.read_points(path)


def _run_group(group: list, timing: Timing, path: Path, processes: int, output=None) -> None:
    """One process group per process; with one, each point is appended as it finishes (a crash keeps
    it); with several, the group's points are appended once pooled."""
    c0 = group[0]
    runs: list[list[dict]] = []
    error = None
    for _ in range(processes):
        try:
            runs.append(launch.spawn(measure_group, (group, timing, str(path) if processes == 1 else None),
                                     world_size=c0.world_size, device=launch.resolve_device(c0.device),
                                     timeout_s=c0.timeout_s, output=output)[0])
        except VitcoreError as e:
            error = str(e)[-800:]
            break
    if processes > 1 and runs and error is None:
        for i in range(len(group)):
            res.append_point(path, pool([r[i] for r in runs]))
    finished = {points.key(p) for p in res.read_points(path)}
    for c in group:
        if _key(c) not in finished:
            res.append_point(path, measurable(c).skeleton(status="error", error=error or "not measured"))


def remeasure(groups: list[list], timing: Timing, out_dir) -> list[dict]:
    """Measure `groups` in one more process each and pool the new windows into their points in
    OUT/points.jsonl (rewritten atomically); returns all points."""
    path = Path(out_dir) / "points.jsonl"
    by_key = {points.key(p): p for p in res.read_points(path)}
    for group in groups:
        c0 = group[0]
        try:
            fresh = launch.spawn(measure_group, (group, timing, None), world_size=c0.world_size,
                                 device=launch.resolve_device(c0.device), timeout_s=c0.timeout_s)[0]
        except VitcoreError as e:  # the points keep what they had; the failure is said, not lost
            print(f"[vitcore] re-measuring {c0.plugin} {c0.precision} failed: {str(e).splitlines()[0]}")
            continue
        for p in fresh:
            k = points.key(p)
            if p.get("status") == "ok" or k not in by_key:  # a failed extra process never replaces a result
                by_key[k] = pool([by_key[k], p]) if k in by_key and by_key[k].get("status") == "ok" else p
        files.write_atomic(path, "".join(json.dumps(p, sort_keys=True) + "\n" for p in by_key.values()))
    return list(by_key.values())


def group_key(group) -> tuple:
    return tuple(_key(c) for c in group)


def _key(item) -> tuple:
    """A planned point's identity, by the same rule as a measured one's (points.key)."""
    return points.key({f.name: getattr(item, f.name, None) for f in points.FIELDS if f.identity})
