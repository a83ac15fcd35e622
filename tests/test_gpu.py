"""GPU tier: every single-GPU registry entry and precision, one GPU each.

Parity, checkpoint and convergence cases run in this process's long-lived GPU worker
(vitcore/processes/worker_pool.py: imports paid once, each case with a fresh process group, seed and memory
statistics), several xdist workers at a time on the one GPU; they report the observed numbers
(printed and written to --results-out), not only pass/fail. Performance tests run last, each alone
on the GPU and in fresh processes (their budgets were recorded that way), and compare with the
budgets: portable invariants with any GPU of the same architecture, device time with this device's
own file (vitcore.gate.budget_files, docs/gate.md).
"""

from __future__ import annotations

import pytest

from tests.support.budget_checks import check_budgets
from tests.support.correctness import (
    MARGIN,
    RESUMED_STEPS,
    check_roundtrip,
    convergence_data,
    reference_accuracy,
    require_near_reference,
)
from tests.support.correctness import RECIPE as CONVERGENCE_RECIPE
from tests.support.gpu import computed_once
from tests.support.options import suite
from tests.support.runs import PARITY, PARITY_STEPS, check_parity
from vitcore.spec.checks import compare
from vitcore.spec.config import RunConfig
from vitcore.training import plain, train

pytestmark = pytest.mark.gpu


CASE_TIMEOUT_S = 900  # the first case of a cold machine builds colossalai's kernels (164 s measured on an H100)


def _case(pool, fn, *args):
    return pool.run(fn, args, timeout_s=CASE_TIMEOUT_S)


def _cfg(spec, precision, **kw):
    return RunConfig(plugin=spec.name, precision=precision, device="cuda", **kw)


def _correctness_cfg(spec, precision, request, **kw):
    """The correctness tests' run: compiled where --compile asks (the reference stays eager torch_ddp)."""
    return _cfg(spec, precision, compile=suite(request.config).compile, **kw)


def _require_compiled(request, got: dict, label: str) -> None:
    """Under --compile a case passes only if dynamo captured a graph: parity of an uncompiled step would
    prove nothing about the compiled one."""
    if suite(request.config).compile:
        assert got.get("compiled_graphs"), (f"{label}: --compile, but dynamo captured no graph ({got.get('compile_plan')}): "
                                            f"{got.get('compile_refusal') or 'no reason recorded'}")


def test_parity_with_torch_ddp(spec, precision, parity_data, probe, ddp_reference, gpu_results, gpu_pool, request):
    cfg = _correctness_cfg(spec, precision, request, **PARITY)
    got = _case(gpu_pool, train.steps_then_probe, cfg, parity_data, PARITY_STEPS, probe)
    check_parity(f"{spec.name} {precision}", ddp_reference, got, precision, gpu_results)
    _require_compiled(request, got, f"{spec.name} {precision}")


def test_checkpoint_roundtrip(spec, precision, parity_data, tmp_path, gpu_results, gpu_pool, request):
    """3 steps, save, 3 more steps; a fresh booster loads and runs the same 3: loss, learning rate,
    loss scale and optimizer state must continue the uninterrupted run (tests/test_checkpoint_io)."""
    cfg = _correctness_cfg(spec, precision, request, **PARITY)
    got = _case(gpu_pool, train.checkpoint_roundtrip, cfg, parity_data, 3, str(tmp_path / "ckpt"), RESUMED_STEPS)
    a, b = got["uninterrupted"], got["resumed"]
    c = compare(f"{spec.name} {precision} resumed vs uninterrupted loss", a["loss"], b["loss"], "fp32")
    gpu_results.add("checkpoint", got | {"max_abs": c.max_abs, "ok": c.ok})
    print(c, f"lr {b['lr']} vs {a['lr']}, loss scale {b['loss_scale']} vs {a['loss_scale']}", sep="\n")
    check_roundtrip(f"{spec.name} {precision}", got, "fp32")
    _require_compiled(request, got, f"{spec.name} {precision}")


def _plain_reference(d, recipe: dict) -> dict:
    return plain.finetune(d, device="cuda", **recipe)


@pytest.fixture(scope="module")
def convergence_reference(request, gpu_pool):
    """The plain PyTorch loop on --dataset, once per session (across xdist workers): (data, its
    held-out accuracy)."""
    d = convergence_data(suite(request.config).dataset)
    key = (d.source, len(d.train), len(d.test), sorted(CONVERGENCE_RECIPE.items()))
    ref = computed_once(request.config, "plain-reference", key,
                        lambda: _case(gpu_pool, _plain_reference, d, CONVERGENCE_RECIPE))
    acc = reference_accuracy(ref, len(d.labels))
    print(f"plain PyTorch {CONVERGENCE_RECIPE['model']} on {ref['dataset']}: held-out accuracy {acc:.3f}")
    return d, acc


def test_convergence(spec, precision, gpu_results, convergence_reference, gpu_pool, request):
    """Each plugin reaches the plain loop's accuracy on the same preset, data and epochs, minus
    tests.test_convergence.MARGIN; the reference's accuracy is printed and recorded beside it."""
    d, ref_acc = convergence_reference
    hist = _case(gpu_pool, train.finetune, _correctness_cfg(spec, precision, request, **CONVERGENCE_RECIPE), d)
    gpu_results.add("convergence", hist | {"reference_accuracy": ref_acc, "margin": MARGIN})
    if hist["status"] == "diverged":
        pytest.fail(f"{spec.name} {precision}: diverged at step {hist['diverged_at_step']}")
    require_near_reference(hist, ref_acc)
    _require_compiled(request, hist, f"{spec.name} {precision}")


def _perf_cfgs(spec, precision, request):
    """The fast profile (its precision per entry; `vitcore bench --precisions` measures the others)
    at each --perf-batch-sizes, measured in one process for both tests below."""
    sizes, model = suite(request.config).perf_batch_sizes, suite(request.config).model
    return [_cfg(spec, precision, profile="fast", model=model, batch_size=bs, weights="random") for bs in sizes]


@pytest.mark.gpu_exclusive
@pytest.mark.profile("fast")
def test_performance_invariants(spec, precision, request, gpu_results, budget_checks):
    """Kernel launches per step and allocated memory (steady and whole-run peak) at every batch size,
    in both directions: properties of the code on an architecture and software stack, judged against
    this device's budget or, where it has none, another GPU's of the same architecture (docs/gate.md)."""
    check_budgets(_perf_cfgs(spec, precision, request), request, gpu_results, budget_checks,
                  ("launches", "memory"))


@pytest.mark.gpu_exclusive
@pytest.mark.profile("fast")
def test_performance_device_time(spec, precision, request, gpu_results, budget_checks):
    """The sum of kernel durations per step against this device's own budget (the host cannot perturb
    it); wall-clock images/s is judged beside it for the session summary only (one process a side
    cannot decide it: the A/B job does, docs/gate.md)."""
    check_budgets(_perf_cfgs(spec, precision, request), request, gpu_results, budget_checks,
                  ("device_time",), reported=("throughput",))
