"""GPU tier: every single-GPU registry entry and precision, one GPU each.

Each case trains in its own process (fresh CUDA state and memory statistics). Parity, checkpoint
and convergence report the observed numbers (printed and written to --results-out), not only
pass/fail. Performance compares with this device's budget file; see vitcore.budgets.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from tests.helpers import PARITY, PARITY_STEPS, check_budgets, check_parity
from vitcore import data, launch, train
from vitcore.checks import CONVERGENCE, compare, require, require_converged
from vitcore.config import RunConfig
from vitcore.model import get_preset

pytestmark = pytest.mark.gpu

CONVERGENCE_MODEL = "vit-tiny"  # trained with its preset's recipe


def _spawn(fn, *args):
    return launch.spawn(fn, args, world_size=1, device="cuda", timeout_s=900)[0]


def _cfg(spec, precision, **kw):
    return RunConfig(plugin=spec.name, precision=precision, device="cuda", **kw)


def test_parity_with_torch_ddp(spec, precision, parity_data, probe, ddp_reference, gpu_results):
    cfg = _cfg(spec, precision, **PARITY)
    got = _spawn(train.steps_then_probe, cfg, parity_data, PARITY_STEPS, probe)
    check_parity(f"{spec.name} {precision}", ddp_reference, got, precision, gpu_results)


def test_checkpoint_roundtrip(spec, precision, parity_data, tmp_path, gpu_results):
    cfg = _cfg(spec, precision, **PARITY)
    got = _spawn(train.checkpoint_roundtrip, cfg, parity_data, 3, str(tmp_path / "ckpt"))
    c = compare(f"{spec.name} {precision} resumed vs uninterrupted loss", got["uninterrupted"], got["resumed"], "fp32")
    gpu_results.add("checkpoint", got | {"max_abs": c.max_abs, "ok": c.ok})
    print(c)
    require(c)


def test_convergence(spec, precision, gpu_results, request):
    d = data.load(request.config.getoption("--dataset"), subset=1500)
    kind = "embedded" if d.source.startswith("embedded") else "dog_food"
    key = (CONVERGENCE_MODEL, kind)
    if key not in CONVERGENCE:
        pytest.skip(f"no stated accuracy threshold for {key}")
    recipe = asdict(get_preset(CONVERGENCE_MODEL).recipe)
    hist = _spawn(train.finetune, _cfg(spec, precision, model=CONVERGENCE_MODEL, **recipe), d)
    gpu_results.add("convergence", hist)
    if hist["status"] == "diverged":
        pytest.fail(f"{spec.name} {precision}: diverged at step {hist['diverged_at_step']}")
    acc = require_converged(hist, CONVERGENCE[key][0])
    print(f"{spec.name} {precision}: accuracy {acc:.3f} (threshold {CONVERGENCE[key][0]})")


def _perf_cfgs(spec, precision, request):
    """The fast profile (its precision per entry; `vitcore bench --precisions` measures the others)
    at each --perf-batch-sizes, measured in one process for both tests below."""
    sizes = [int(x) for x in request.config.getoption("--perf-batch-sizes").split(",")]
    model = request.config.getoption("--model") or "vit-base"
    return [_cfg(spec, precision, profile="fast", model=model, batch_size=bs, weights="random") for bs in sizes]


@pytest.mark.profile("fast")
def test_performance_device(spec, precision, request, gpu_results, budget_checks):
    """Device time and kernel launches per step at every batch size against the budget: what the
    host cannot perturb, gated tightly (docs/gate.md)."""
    check_budgets(_perf_cfgs(spec, precision, request), request, gpu_results, budget_checks,
                  ("device_time", "launches"))


@pytest.mark.profile("fast")
def test_performance_memory(spec, precision, request, gpu_results, budget_checks):
    """Steady-state peak memory per GPU (allocated and reserved) at every batch size against the budget."""
    check_budgets(_perf_cfgs(spec, precision, request), request, gpu_results, budget_checks, ("memory",))


@pytest.mark.profile("fast")
def test_performance_throughput(spec, precision, request, gpu_results, budget_checks):
    """Wall-clock images/s: the windows against the budget's, statistically (inconclusive is a skip
    naming the change this point's noise can detect)."""
    check_budgets(_perf_cfgs(spec, precision, request), request, gpu_results, budget_checks, ("throughput",))
