"""Shared test helpers: run a training configuration in-process or in gloo processes, the GPU
tiers' parity and performance checks (tests/test_gpu.py, tests/test_multigpu.py), and what the
processes of one pytest session share: results computed once, and the GPU (docs/gpu.md)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vitcore import VitcoreError, files
from vitcore.gate import budget_files
from vitcore.measure.timing import Timing, pool
from vitcore.processes import launch, worker_pool
from vitcore.spec.checks import TOLERANCES, compare, require
from vitcore.spec.config import RunConfig
from vitcore.spec.points import key_text

PARITY_STEPS = 5
# Parity and checkpoints use the tiny preset at lr 1e-3 (the CPU parity recipe). Measured on an
# H100 with randomly initialised ViT-B: at lr 1e-4 its loss jumps 1.2 -> 2.4 in one step, so any
# rounding is amplified; at lr 1e-5 the updates are below the fp16/bf16 spacing of the working
# weights, so every mixed-precision plugin (not only a broken one) ends 27% (fp16) / 50% (bf16)
# away from fp32 in logits, while torch_ddp_fp16 (fp32 weights) stays at 0.1%. Weight decay and
# warm-up are those the recorded parity runs used (not the tiny preset's recipe).
PARITY = dict(model="vit-tiny", batch_size=16, lr=1e-3, weight_decay=0.1, warmup_ratio=0.3)

# A short CPU bench (every plugin the CPU runs: 5 entries) that test_report and test_bench_modes run
CPU_BENCH = [sys.executable, "-m", "vitcore.cli", "bench", "--device", "cpu", "--model", "vit-tiny",
             "--steps", "3", "--repeats", "3", "--warmup", "1", "--min-window", "0"]


def run(data=None, **kw) -> dict:
    from vitcore.training import (
        train,  # colossalai's booster: 6 s of every pytest process's start-up otherwise
    )

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
        files.write_atomic_bytes(path, pickle.dumps(value))
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


def third_party_log(config) -> Path:
    """The session's log of everything that is not the suite's own output: Python warnings (root
    conftest) and the GPU workers' stdout and stderr (colossalai's notices, torch's warnings). One
    file for every process of the session (--results-out where given, else the session's basetemp);
    the terminal summary counts its lines."""
    folder = config.getoption("--results-out")
    path = Path(folder) if folder else session_dir(config)
    path.mkdir(parents=True, exist_ok=True)
    return path / "third-party.log"


def worker_output(config) -> launch.WorkerOutput:
    """GPU workers write into the session's third-party log (the console with -v -v)."""
    return launch.WorkerOutput(str(third_party_log(config)), config.getoption("verbose") > 1)


FRESH_GPU_WORKERS = pytest.StashKey[worker_pool.WorkerPool]()


def fresh_gpu_workers(config) -> worker_pool.WorkerPool:
    """This process's single-use GPU workers for the performance tests: each measurement in a process
    that has run nothing before, as the budgets were recorded (vitcore bench, fresh processes), with
    its imports paid while something else runs (tests/conftest.py starts the first at collection)."""
    pool = config.stash.get(FRESH_GPU_WORKERS, None)
    if pool is None:
        pool = config.stash[FRESH_GPU_WORKERS] = worker_pool.WorkerPool("cuda", single_use=True,
                                                                         output=worker_output(config))
    return pool


def perf_processes(config) -> int:
    """Fresh processes per performance measurement: --perf-processes, else 3 when recording budgets
    (a budget is the band several processes span; budget_files.MIN_RECORD_PROCESSES) and 1 to check."""
    n = config.getoption("--perf-processes")
    return n if n is not None else (budget_files.MIN_RECORD_PROCESSES if config.getoption("--update-budgets") else 1)


def performance_points(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    """Measure `cfgs` in perf_processes() separate processes, once per session (the invariant and
    device-time tests of one plugin share it, across xdist workers too), pooling them (timing.pool:
    each process's values kept in `observed`); with --update-budgets, record each point as this
    device's budget, printing what changed. Returns the points and the review or refusal lines."""
    opt = request.config.getoption
    key = (tuple(cfgs), opt("--perf-steps"), opt("--perf-repeats"), opt("--perf-min-window"),
           perf_processes(request.config), opt("--update-budgets"), opt("--budgets"), opt("--perf-inject-device-pct"))
    return computed_once(request.config, "performance", key, lambda: _measure(cfgs, request, gpu_results))


def _measure(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    from vitcore.measure.bench import measure_group  # imports colossalai: see run()

    c0 = cfgs[0]
    opt = request.config.getoption
    timing = Timing(warmup=5, steps=opt("--perf-steps"), repeats=opt("--perf-repeats"),
                    min_window_s=opt("--perf-min-window"), inject_device_pct=opt("--perf-inject-device-pct"))
    args = (cfgs, timing, None)
    if c0.world_size == 1:  # a fresh worker, already imported (start-up was 10-15 s of each test)
        fresh = fresh_gpu_workers(request.config)

        def once():
            return fresh.run(measure_group, args, timeout_s=900)
    else:
        def once():
            return launch.spawn(measure_group, args, world_size=c0.world_size, device="cuda", timeout_s=900,
                                output=worker_output(request.config))[0]
    runs = [once() for _ in range(perf_processes(request.config))]
    points = [pool(list(same)) for same in zip(*runs, strict=True)]
    refused, review = [], []
    for point in points:
        gpu_results.add("performance", point)
        print(f"{c0.plugin} {c0.precision} ws={c0.world_size} bs={point['batch_size']}: "
              f"{point.get('images_per_s') or 0:.1f} img/s per GPU (spread {point.get('spread') or 0:.1%}, "
              f"{point.get('processes')} processes), device {point.get('device_ms_per_step') or 0:.2f} ms/step, "
              f"{point.get('launches_per_step') or 0:.0f} launches/step, alloc "
              f"{point.get('steady_mem_allocated_gib') or 0:.3f} GiB, status {point['status']}")
        if opt("--update-budgets"):
            try:
                path, _, lines = budget_files.update(opt("--budgets"), point,
                                                     allow_invariant_change=opt("--allow-invariant-change"))
                review.append(f"{key_text(point)} -> {path.name}: {'; '.join(lines)}")
            except VitcoreError as e:
                refused.append(f"budget not recorded: {e}")
    return points, refused + review


def judge_point(folder, point, groups) -> tuple[list, list[str]]:
    """(verdicts, missing): each gate group's verdicts against its reference (budget_files.check:
    this device's entry, or for portable groups another device's of the same architecture), and the
    NoBudget reasons of the groups that have none."""
    verdicts, missing = [], []
    for group in groups:
        try:
            _, vs, device = budget_files.check(folder, point, group)
        except budget_files.NoBudget as e:
            missing.append(str(e))
            continue
        verdicts += [(v, device) for v in vs]
    return verdicts, missing


def check_budgets(cfgs, request, gpu_results, budget_checks, groups: tuple[str, ...],
                  reported: tuple[str, ...] = ()) -> None:
    """Every point's verdicts in the gate `groups` (budgets.judge, the rule `vitcore bench --compare`
    uses too). Failing verdicts (regressed; improved on a two-sided invariant: a stale budget) fail
    the test, all of them together, and the session's are listed at its end (`budget_checks`). A
    group with no budget fails closed, naming the device and the command that records it;
    --allow-missing-budgets makes that a skip. An inconclusive device time (a throttled clock) fails
    too: re-measure at full clock. `reported` groups (wall time: one process a side cannot decide it)
    are judged for the session summary only. With --update-budgets: record instead."""
    points, lines = performance_points(cfgs, request, gpu_results)
    if request.config.getoption("--update-budgets"):
        print("\n".join(lines))
        refused = [ln for ln in lines if ln.startswith("budget not recorded")]
        assert not refused, "; ".join(refused)
        return
    folder = request.config.getoption("--budgets")
    problems, missing = [], []
    for point in points:
        verdicts, lacking = judge_point(folder, point, groups)
        problems += budget_checks.record(point, groups, verdicts, lacking)
        missing += [m for m in lacking if m not in missing]
        print("\n".join(f"{v} (budget of {dev})" for v, dev in verdicts))
        if reported:
            budget_checks.report(*judge_point(folder, point, reported))
    assert not problems, "; ".join(problems)
    if missing:
        if request.config.getoption("--allow-missing-budgets"):
            pytest.skip("--allow-missing-budgets: " + budget_files.join_missing(missing))
        pytest.fail(budget_files.join_missing(missing), pytrace=False)


# --- what a pytest-xdist worker hands its controller -------------------------------------------------
# name -> (collect(config): JSON-able data or None, merge(config, data)). The root conftest registers
# the budget checks, tests/conftest.py the GPU result rows; the two hooks in the root conftest
# (xdist_collect, xdist_merge) are the one transfer. JSON text: execnet sends plain types only.
XDIST_CHANNELS: dict[str, tuple] = {}


def xdist_collect(config) -> None:
    out = getattr(config, "workeroutput", None)
    if out is None:  # not an xdist worker
        return
    for name, (collect, _) in XDIST_CHANNELS.items():
        data = collect(config)
        if data is not None:
            out[name] = json.dumps(data)


def xdist_merge(node) -> None:
    got = getattr(node, "workeroutput", {})
    for name, (_, merge) in XDIST_CHANNELS.items():
        if got.get(name):
            merge(node.config, json.loads(got[name]))
