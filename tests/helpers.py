"""Shared test helpers: run a training configuration in-process or in gloo processes, and the
GPU tiers' parity and performance checks (tests/test_gpu.py, tests/test_multigpu.py)."""

from __future__ import annotations

import pytest

from vitcore import VitcoreError, budgets, launch, train
from vitcore.bench import measure_group
from vitcore.checks import TOLERANCES, compare, require
from vitcore.config import RunConfig
from vitcore.points import key_text
from vitcore.timing import Timing

PARITY_STEPS = 5
# Parity and checkpoints use the tiny preset at lr 1e-3 (the CPU parity recipe). Measured on an
# H100 with randomly initialised ViT-B: at lr 1e-4 its loss jumps 1.2 -> 2.4 in one step, so any
# rounding is amplified; at lr 1e-5 the updates are below the fp16/bf16 spacing of the working
# weights, so every mixed-precision plugin (not only a broken one) ends 27% (fp16) / 50% (bf16)
# away from fp32 in logits, while torch_ddp_fp16 (fp32 weights) stays at 0.1%. Weight decay and
# warm-up are those the recorded parity runs used (not the tiny preset's recipe).
PARITY = dict(model="vit-tiny", batch_size=16, lr=1e-3, weight_decay=0.1, warmup_ratio=0.3)


def run(data=None, **kw) -> dict:
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


# The memory and throughput tests of one plugin share one measurement per session (per xdist worker).
MEASURED = pytest.StashKey[dict]()


def performance_points(cfgs, request, gpu_results) -> tuple[list[dict], list[str], list[str]]:
    """Measure `cfgs` in one process group, once per session; with --update-budgets, record each
    point as this device's budget. Returns the points, the budgets that could not be recorded and
    the throughput baselines refused (memory recorded alone), each with its reason."""
    measured = request.config.stash.setdefault(MEASURED, {})
    key = tuple((c.plugin, c.precision, c.world_size, c.batch_size, c.model) for c in cfgs)
    if key in measured:
        return measured[key]
    c0 = cfgs[0]
    timing = Timing(warmup=5, steps=request.config.getoption("--perf-steps"),
                    repeats=request.config.getoption("--perf-repeats"),
                    min_window_s=request.config.getoption("--perf-min-window"))
    points = launch.spawn(measure_group, (cfgs, timing, None), world_size=c0.world_size, device="cuda",
                          timeout_s=900)[0]
    failed, refused = [], []
    for point in points:
        gpu_results.add("performance", point)
        print(f"{c0.plugin} {c0.precision} ws={c0.world_size} bs={point['batch_size']}: "
              f"{point.get('images_per_s') or 0:.1f} img/s per GPU "
              f"(spread {point.get('spread') or 0:.1%}), alloc {point.get('peak_mem_allocated_gib') or 0:.2f} GiB, "
              f"reserved {point.get('peak_mem_reserved_gib') or 0:.2f} GiB, status {point['status']}")
        if request.config.getoption("--update-budgets"):
            try:
                _, entry = budgets.update(request.config.getoption("--budgets"), point)
                if entry["images_per_s"] is None:
                    refused.append(f"{key_text(point)}: throughput not recorded: {entry['throughput_refused']}")
            except VitcoreError as e:
                failed.append(f"budget not recorded: {e}")
    measured[key] = points, failed, refused
    return measured[key]


def check_budgets(cfgs, request, gpu_results, budget_checks, metric: str) -> None:
    """Compare every point's `metric` ("memory" or "throughput") with this device's budget; all
    violations of the test are reported together, and the session's at its end (`budget_checks`,
    the root conftest's fixture). A point without a budget for `metric` is a skip with the reason,
    never a pass. With --update-budgets: record, and report what was refused."""
    points, failed, refused = performance_points(cfgs, request, gpu_results)
    if request.config.getoption("--update-budgets"):
        assert not failed, "; ".join(failed)
        if metric == "throughput" and refused:
            pytest.skip("; ".join(refused))
        return
    folder = request.config.getoption("--budgets")
    problems, missing = [], []
    for point in points:
        try:
            _, violations = budgets.check(folder, point, metric)
        except budgets.NoBudget as e:
            missing.append(str(e))
            continue
        budget_checks.record(point, violations, metric)
        problems += map(str, violations)
    assert not problems, "; ".join(problems)
    if missing:
        pytest.skip("; ".join(missing))
