"""Multi-GPU tier: every registry entry at each --world-sizes (data parallel, and hybrid_parallel's
tp=2, pp=2, tp=2 x pp=2 and tp=2 with ZeRO-1 in the dp groups), on one host's GPUs.

Parity: the same *global* batch as single-GPU torch_ddp fp32 (per-rank batch = global / dp size),
K steps, per-step loss and probe logits within the tolerance of the entry's precision.
Performance: per-GPU throughput and memory against this device identity's budget file (the
identity carries the GPU count, so multi-GPU budgets never mix with single-GPU ones); the bench's
report turns the same points into the scaling table (efficiency against one GPU).
The same code paths run on CPU under gloo in tests/test_parity.py (dp=2, tp=2, pp=2).
"""

from __future__ import annotations

import pytest

from tests.support.budget_checks import check_budgets
from tests.support.options import suite
from tests.support.runs import PARITY, PARITY_STEPS, check_parity
from vitcore.processes import launch
from vitcore.spec.config import RunConfig, profile_precision
from vitcore.training import train

GLOBAL_BATCH = PARITY["batch_size"]


def _cases(config, *, perf: bool):
    specs, sizes = suite(config).selected(), suite(config).world_sizes
    out = []
    for ws in sizes:
        for s in specs:
            if ws < max(2, s.min_world_size) or ws % (s.tp_size * s.pp_size):
                continue
            if s.min_world_size > 1 and ws != s.min_world_size and not perf:
                continue  # model-parallel entries: parity at their own size; dp on top is the dp cases' job
            prec = profile_precision(s, "fast", cuda=True)
            out.append(pytest.param(s, prec, ws, id=f"{s.name}-{prec}-ws{ws}",
                                    marks=pytest.mark.multigpu(n=ws)))
    return out


def pytest_generate_tests(metafunc):
    if "world_size" in metafunc.fixturenames:
        metafunc.parametrize(("entry", "precision", "world_size"),
                             _cases(metafunc.config, perf=metafunc.function.__name__.startswith("test_scaling_performance")))


def _per_rank(entry, world_size: int) -> int:
    dp = world_size // (entry.tp_size * entry.pp_size)
    if GLOBAL_BATCH % dp:
        pytest.skip(f"global batch {GLOBAL_BATCH} does not split over dp={dp}")
    return GLOBAL_BATCH // dp


def test_parity_with_single_gpu_torch_ddp(entry, precision, world_size, parity_data, probe, ddp_reference,
                                          gpu_results):
    cfg = RunConfig(plugin=entry.name, precision=precision, device="cuda", world_size=world_size,
                    **(PARITY | {"batch_size": _per_rank(entry, world_size)}))
    ranks = launch.spawn(train.steps_then_probe, (cfg, parity_data, PARITY_STEPS, probe), world_size=world_size,
                         device="cuda", timeout_s=900)
    # step losses are reduced over dp shards on every rank; logits live on the last pipeline stage
    got = next(r for r in ranks if r["probe_logits"] is not None)
    check_parity(f"{entry.name} {precision} ws{world_size}", ddp_reference, got, precision, gpu_results,
                 world_size=world_size)


def _scaling_cfgs(entry, precision, world_size, request):
    """--perf-batch-sizes per dp rank, measured in one process group for both tests below."""
    sizes, model = suite(request.config).perf_batch_sizes, suite(request.config).model
    return [RunConfig(plugin=entry.name, precision=precision, profile="fast", model=model, batch_size=bs,
                      weights="random", device="cuda", world_size=world_size) for bs in sizes]


def test_scaling_performance(entry, precision, world_size, request, gpu_results, budget_checks):
    """Launches and allocated memory per GPU (portable: any GPU of this architecture), device time per
    GPU (this device identity, GPU count included); per-GPU images/s reported in the session summary."""
    check_budgets(_scaling_cfgs(entry, precision, world_size, request), request, gpu_results, budget_checks,
                  ("launches", "memory", "device_time"), reported=("throughput",))
