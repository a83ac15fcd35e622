"""Shared test helpers: run a training configuration in-process or in gloo processes, the GPU
tiers' parity and performance checks (tests/test_gpu.py, tests/test_multigpu.py), and what the
processes of one pytest session share: results computed once, and the GPU (docs/gpu.md)."""

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

from vitcore import VitcoreError, budgets, launch, results, worker_pool
from vitcore.checks import TOLERANCES, compare, require
from vitcore.config import RunConfig
from vitcore.timing import Timing, pool

PARITY_STEPS = 5
# Parity and checkpoints use the tiny preset at lr 1e-3 (the CPU parity recipe). Measured on an
# H100 with randomly initialised ViT-B: at lr 1e-4 its loss jumps 1.2 -> 2.4 in one step, so any
# rounding is amplified; at lr 1e-5 the updates are below the fp16/bf16 spacing of the working
# weights, so every mixed-precision plugin (not only a broken one) ends 27% (fp16) / 50% (bf16)
# away from fp32 in logits, while torch_ddp_fp16 (fp32 weights) stays at 0.1%. Weight decay and
# warm-up are those the recorded parity runs used (not the tiny preset's recipe).
PARITY = dict(model="vit-tiny", batch_size=16, lr=1e-3, weight_decay=0.1, warmup_ratio=0.3)


def run(data=None, **kw) -> dict:
    from vitcore import train  # colossalai's booster: 6 s of every pytest process's start-up otherwise

    cfg = RunConfig(**({"dataset": "embedded", "device": "cpu", "timeout_s": 300} | kw))
    return launch.run(train.finetune, cfg, data, world_size=cfg.world_size, device=cfg.device,
                      timeout_s=cfg.timeout_s)[0]


def check_parity(label: str, reference: dict, got: dict, precision: str, gpu_results, **extra) -> None:
    """Per-step loss and probe logits against the torch_ddp reference, with the tolerance of
    `precision`; the observed errors are recorded and printed, not only pass/fail."""
    losses = compare(f"{label} per-step loss", reference["step_loss"], got["step_loss"], precision)
    logits = compare(f"{label} probe logits", reference["probe_logits"], got["probe_logits"], precision)
    gpu_results.add("parity", got | extra | {"loss_max_abs": losses.max_abs, "loss_norm_rel": losses.norm_rel,
                                             "logits_max_abs": logits.max_abs, "logits_norm_rel": logits.norm_rel,
                                             "tolerance": TOLERANCES[precision][:2], "ok": losses.ok and logits.ok})
    print(losses, logits, sep="\n")
    require(losses)
    require(logits)


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
        results.write_atomic_bytes(path, pickle.dumps(value))
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


FRESH_GPU_WORKERS = pytest.StashKey[worker_pool.WorkerPool]()


def fresh_gpu_workers(config) -> worker_pool.WorkerPool:
    """This process's single-use GPU workers for the performance tests: each measurement in a process
    that has run nothing before, as the budgets were recorded (vitcore bench, fresh processes), with
    its imports paid while something else runs (tests/conftest.py starts the first at collection)."""
    pool = config.stash.get(FRESH_GPU_WORKERS, None)
    if pool is None:
        pool = config.stash[FRESH_GPU_WORKERS] = worker_pool.WorkerPool("cuda", single_use=True)
    return pool


def performance_points(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    """Measure `cfgs` in --perf-processes separate process groups, once per session (the device,
    memory and throughput tests of one plugin share it, across xdist workers too), pooling their
    windows (timing.pool); with --update-budgets, record each point as this device's budget.
    Returns the points and the budgets that could not be recorded, with the reason."""
    opt = request.config.getoption
    key = (tuple(cfgs), opt("--perf-steps"), opt("--perf-repeats"), opt("--perf-min-window"),
           opt("--perf-processes"), opt("--update-budgets"), opt("--budgets"))
    return computed_once(request.config, "performance", key, lambda: _measure(cfgs, request, gpu_results))


def _measure(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    from vitcore.bench import measure_group  # imports colossalai: see run()

    c0 = cfgs[0]
    opt = request.config.getoption
    timing = Timing(warmup=5, steps=opt("--perf-steps"), repeats=opt("--perf-repeats"),
                    min_window_s=opt("--perf-min-window"))
    args = (cfgs, timing, None)
    if c0.world_size == 1:  # a fresh worker, already imported (start-up was 10-15 s of each test)
        fresh = fresh_gpu_workers(request.config)

        def once():
            return fresh.run(measure_group, args, timeout_s=900)
    else:
        def once():
            return launch.spawn(measure_group, args, world_size=c0.world_size, device="cuda", timeout_s=900)[0]
    runs = [once() for _ in range(opt("--perf-processes"))]
    points = [pool(list(same)) for same in zip(*runs, strict=True)]
    failed = []
    for point in points:
        gpu_results.add("performance", point)
        print(f"{c0.plugin} {c0.precision} ws={c0.world_size} bs={point['batch_size']}: "
              f"{point.get('images_per_s') or 0:.1f} img/s per GPU (spread {point.get('spread') or 0:.1%}, "
              f"{point.get('processes')} processes), device {point.get('device_ms_per_step') or 0:.2f} ms/step, "
              f"{point.get('launches_per_step') or 0:.0f} launches/step, alloc "
              f"{point.get('steady_mem_allocated_gib') or 0:.2f} GiB, status {point['status']}")
        if opt("--update-budgets"):
            try:
                budgets.update(opt("--budgets"), point)
            except VitcoreError as e:
                failed.append(f"budget not recorded: {e}")
    return points, failed


def check_budgets(cfgs, request, gpu_results, budget_checks, groups: tuple[str, ...]) -> None:
    """Every point's verdicts in the gate `groups` against this device's budget (budgets.check, the
    rule `vitcore bench --compare` uses too). Regressed fails, all of the test's together, and the
    session's are listed at its end (`budget_checks`); inconclusive (wall time on a noisy host) and a
    missing budget are a skip with the reason, never a pass; improved passes, naming the baseline to
    update. With --update-budgets: record instead."""
    points, failed = performance_points(cfgs, request, gpu_results)
    if request.config.getoption("--update-budgets"):
        assert not failed, "; ".join(failed)
        return
    folder = request.config.getoption("--budgets")
    problems, undecided, notes = [], [], []
    for point in points:
        for group in groups:
            try:
                _, verdicts = budgets.check(folder, point, group)
            except budgets.NoBudget as e:
                undecided.append(str(e))
                continue
            regressed = [v for v in verdicts if v.outcome == "regressed"]
            budget_checks.record(point, regressed, group)
            problems += map(str, regressed)
            undecided += [str(v) for v in verdicts if v.outcome == "inconclusive"]
            notes += [f"update the baseline: {v}" for v in verdicts if v.outcome == "improved"]
            print("\n".join(str(v) for v in verdicts))
    assert not problems, "; ".join(problems)
    if undecided:
        pytest.skip("; ".join(undecided + notes))
