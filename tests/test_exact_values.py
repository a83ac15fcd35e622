"""Exact values of the suite's numeric rules, worked out by hand (issue 18).

Each rule is pinned just inside and just outside its boundary, or to a value computed here from
the formula written out, so that a one-line change to a rule (a widened tolerance, a dropped
column, median replaced by max) fails a test. The constants are typed in on purpose: a test that
read them from the module under test would follow the bug.
"""

import math

import pytest
import torch

from vitcore.gate import budgets
from vitcore.inputs.model import get_preset
from vitcore.measure import timing
from vitcore.reporting import report
from vitcore.spec import checks, points
from vitcore.training.schedule import warmup_cosine

# --- the point schema: the CSV header and the gate declared per field ------------------------------
CSV_HEADER = [
    "plugin", "family", "precision", "profile", "variant", "model", "world_size", "batch_size", "status",
    "images_per_s", "ratio_to_reference", "reference", "ratio_to_reference_eager",
    "ratio_to_reference_compiled", "spread", "step_time_s", "device_ms_per_step", "device_sm_clock_mhz", "copy_ms_per_step",
    "launches_per_step", "host_ms_per_step", "first_step_s", "compile_plan", "peak_mem_allocated_gib", "peak_mem_reserved_gib",
    "mem_lower_bound_gib", "mfu", "gpu_busy", "host_profiled_ms_per_step", "host_wait_ms_per_step", "repeats", "processes", "injected", "steps", "warmup",
    "min_window_s", "command", "device", "torch", "cuda", "colossalai", "transformers", "git_sha", "date", "dataset", "weights", "error",
]


def test_csv_header_is_pinned_to_the_schema():
    assert points.csv_fields() == CSV_HEADER
    text = report.to_csv([{"plugin": "torch_ddp", "mfu": 0.25, "not_a_field": 1}])
    header, row = text.splitlines()[:2]
    assert header.split(",") == CSV_HEADER
    assert row.split(",")[CSV_HEADER.index("mfu")] == "0.25"


# field -> (group, worse, tolerance, fallback, samples, portable, two_sided, label)
GATES = {
    "images_per_s": ("throughput", "lower", 0.05, None, "images_per_s_process_medians", False, False, "images/s"),
    "device_ms_per_step": ("device_time", "higher", 0.02, None, None, False, False, "device ms/step"),
    "launches_per_step": ("launches", "higher", 0.0, None, None, True, True, "launches/step"),
    "steady_mem_allocated_gib": ("memory", "higher", 0.005, None, None, True, True, "steady allocated GiB"),
}


def test_gated_fields_and_their_defaults_are_pinned():
    got = {f.name: (f.gate.group, f.gate.worse, f.gate.tolerance, f.gate.fallback, f.gate.samples, f.gate.portable,
                    f.gate.two_sided, f.gate.label)
           for f in points.gated()}
    assert got == GATES
    assert budgets.tolerances() == {"throughput": 0.05, "device_time": 0.02, "launches": 0.0, "memory": 0.005}
    assert budgets.tolerances({"memory": 0.1}) == {"throughput": 0.05, "device_time": 0.02, "launches": 0.0,
                                                   "memory": 0.1}
    assert points.gate_groups() == ["throughput", "device_time", "launches", "memory"]
    assert [g for g in points.gate_groups() if points.portable(g)] == ["launches", "memory"]
    # shown, never gated: reserved memory (the allocator's history) and the whole run's allocated peak
    for name in ("steady_mem_reserved_gib", "peak_mem_reserved_gib", "peak_mem_allocated_gib"):
        assert points.get(name).gate is None, name
    assert points.OBSERVED == ("device_ms_per_step", "launches_per_step", "steady_mem_allocated_gib",
                               "peak_mem_allocated_gib", "steady_mem_reserved_gib")


# --- timing: median and spread of given windows ------------------------------------------------------
def _timed(windows, steps=10, device=None):
    return timing.Timed(windows=windows, loss=None, steps=steps, warm_mem=None, noise=[], device=device or {},
                        injected="")


def test_measured_fields_take_the_median_and_spread_of_the_windows():
    # windows of 1.0, 2.0, 0.5 s for 10 steps of 32 images: 320, 160 and 640 images/s
    run = _timed([1.0, 2.0, 0.5], device={"device_ms_per_step": 50.0, "copy_ms_per_step": 10.0,
                                          "launches_per_step": 7.0})
    f = timing.measured_fields(run, images_per_step=32, timing=timing.Timing(repeats=3), preset=get_preset("vit-tiny"),
                               mem=[2**30, 2 * 2**30, 3 * 2**30, 4 * 2**30])
    assert f["images_per_s_windows"] == pytest.approx([320.0, 160.0, 640.0], rel=1e-12)
    assert f["images_per_s"] == pytest.approx(320.0, rel=1e-12)  # the median, not the mean (373) or max
    assert f["images_per_s_process_medians"] == [f["images_per_s"]]
    assert f["spread"] == pytest.approx((640 - 160) / 320, rel=1e-12)  # 1.5
    assert f["step_time_s"] == pytest.approx(0.1, rel=1e-12)
    assert f["host_ms_per_step"] == pytest.approx(100.0 - 50.0 - 10.0, rel=1e-9)
    assert (f["peak_mem_allocated_gib"], f["peak_mem_reserved_gib"], f["steady_mem_allocated_gib"],
            f["steady_mem_reserved_gib"]) == (1.0, 2.0, 3.0, 4.0)
    assert (f["repeats"], f["steps"], f["processes"], f["launches_per_step"]) == (3, 10, 1, 7.0)


def test_measured_fields_of_an_even_number_of_windows_average_the_middle_two():
    # 2, 4, 1, 8 s per 8 steps of 16 images: 64, 32, 128, 16 images/s; median (32 + 64) / 2 = 48
    f = timing.measured_fields(_timed([2.0, 4.0, 1.0, 8.0], steps=8), images_per_step=16, timing=timing.Timing(),
                               preset=get_preset("vit-tiny"))
    assert f["images_per_s"] == pytest.approx(48.0, rel=1e-12)
    assert f["spread"] == pytest.approx((128 - 16) / 48, rel=1e-12)
    assert f["step_time_s"] == pytest.approx((0.25 + 0.5) / 2, rel=1e-12)
    assert f["host_ms_per_step"] is None and f["peak_mem_allocated_gib"] is None


def _process(windows, **kw):
    med = sorted(windows)[len(windows) // 2]
    return {"status": "ok", "plugin": "gemini", "world_size": 2, "images_per_s": med, "images_per_s_windows": windows,
            "images_per_s_process_medians": [med], "processes": 1, "step_time_s": 32 / med, "mfu": 0.5,
            "images_per_s_total": 2 * med} | kw


def test_pool_takes_median_and_spread_over_all_windows_of_all_processes():
    a = _process([100.0, 110.0, 90.0], device_ms_per_step=10.0, copy_ms_per_step=1.0, launches_per_step=50.0,
                 peak_mem_allocated_gib=1.0, steady_mem_reserved_gib=3.0)
    b = _process([120.0, 80.0, 100.0], device_ms_per_step=12.0, copy_ms_per_step=None, launches_per_step=51.0,
                 peak_mem_allocated_gib=1.5, steady_mem_reserved_gib=2.0)
    p = timing.pool([a, b])
    assert p["images_per_s_windows"] == [100.0, 110.0, 90.0, 120.0, 80.0, 100.0]
    assert p["images_per_s"] == 100.0  # sorted 80 90 100 100 110 120: (100 + 100) / 2
    assert p["spread"] == pytest.approx(0.4)  # (120 - 80) / 100
    assert p["images_per_s_process_medians"] == [100.0, 100.0] and p["processes"] == 2
    assert p["device_ms_per_step"] == 11.0 and p["copy_ms_per_step"] == 1.0  # means of those measured
    assert p["launches_per_step"] == 51.0 and p["peak_mem_allocated_gib"] == 1.5  # maxima
    assert p["steady_mem_reserved_gib"] == 3.0 and p["steady_mem_allocated_gib"] is None
    assert p["mfu"] == pytest.approx(0.5 * 100 / 100) and p["images_per_s_total"] == 200.0
    assert p["step_time_s"] == pytest.approx(32 / 100)


def test_pool_of_skewed_windows_is_not_the_mean_or_max():
    p = timing.pool([_process([10.0, 20.0, 30.0]), _process([40.0, 50.0, 1000.0])])
    assert p["images_per_s"] == 35.0 and p["spread"] == pytest.approx((1000 - 10) / 35)
    assert p["mfu"] == pytest.approx(0.5 * 35 / 20)


def test_pool_keeps_a_failed_process_as_the_point():
    err = {"status": "error", "error": "boom"}
    assert timing.pool([_process([1.0, 2.0, 3.0]), err]) == err | {"processes": 1}
    assert timing.pool([err, err]) == err | {"processes": 1}
    one = _process([1.0, 2.0, 3.0], processes=4)
    assert timing.pool([one]) == one | {"processes": 1}


# --- checks: parity tolerances per precision -------------------------------------------------------------
def test_parity_tolerances_are_pinned_per_precision():
    assert {p: (r, a) for p, (r, a, _) in checks.TOLERANCES.items()} == {
        "fp32": (1e-4, 1e-5), "fp16": (5e-2, 5e-4), "bf16": (5e-2, 4e-3)}
    assert checks.CONVERGENCE[("vit-tiny", "embedded")][0] == 0.55


# ref = four ones: ||ref|| = 2, sqrt(n) = 2, so the allowed ||diff|| is 2 * atol + 2 * rtol
@pytest.mark.parametrize("precision,allowed", [("fp32", 2 * 1e-5 + 2 * 1e-4), ("fp16", 2 * 5e-4 + 2 * 5e-2),
                                               ("bf16", 2 * 4e-3 + 2 * 5e-2)])
def test_parity_compare_at_its_boundary(precision, allowed):
    ref = [1.0, 1.0, 1.0, 1.0]
    inside = checks.compare("loss", ref, [1.0 + allowed * 0.99, 1.0, 1.0, 1.0], precision)
    outside = checks.compare("loss", ref, [1.0 + allowed * 1.01, 1.0, 1.0, 1.0], precision)
    assert inside.ok and not outside.ok
    assert outside.max_abs == pytest.approx(allowed * 1.01, rel=1e-9)
    assert outside.norm_rel == pytest.approx(allowed * 1.01 / 2, rel=1e-9)
    assert (outside.n, outside.rtol, outside.atol) == (4, *checks.TOLERANCES[precision][:2])
    with pytest.raises(checks.CheckFailed, match=r"loss: \|diff\|/\|ref\| .* OUTSIDE rtol"):
        checks.require(outside)
    assert checks.require(inside) is inside


def test_fp32_parity_rejects_a_five_percent_error():
    c = checks.compare("logits", [1.0, -2.0, 3.0], [1.05, -2.1, 3.15], "fp32")
    assert not c.ok and c.norm_rel == pytest.approx(0.05, rel=1e-9)
    assert checks.compare("logits", [1.0, -2.0, 3.0], [1.05, -2.1, 3.15], "fp16").ok


def test_parity_compare_norm_is_over_the_whole_vector():
    # |diff| = sqrt(0.3^2 + 0.4^2) = 0.5 against ||ref|| = 5 (3-4-5): 10% relative
    c = checks.compare("x", [3.0, 4.0], [3.3, 4.4], "bf16")
    assert c.norm_rel == pytest.approx(0.1, rel=1e-9) and c.max_abs == pytest.approx(0.4, rel=1e-9)
    assert not c.ok  # 0.5 > 4e-3 * sqrt(2) + 5e-2 * 5 = 0.2557
    assert checks.compare("x", [3.0, 4.0], [3.15, 4.2], "bf16").ok  # 0.25 <= 0.2557


def test_zero_reference_uses_the_absolute_tolerance_only():
    assert checks.compare("x", [0.0] * 4, [1.9e-5, 0.0, 0.0, 0.0], "fp32").ok  # <= 1e-5 * 2
    assert not checks.compare("x", [0.0] * 4, [2.1e-5, 0.0, 0.0, 0.0], "fp32").ok
    assert checks.compare("x", [0.0] * 4, [2.1e-5, 0.0, 0.0, 0.0], "fp32").norm_rel == pytest.approx(2.1e25)


def test_parity_compare_rejects_nan_and_bad_shapes():
    assert not checks.compare("x", [1.0, 2.0], [1.0, float("nan")], "fp16").ok
    assert not checks.compare("x", [1.0, 2.0], [1.0, float("inf")], "fp16").ok
    with pytest.raises(checks.CheckFailed, match=r"x: cannot compare shapes \(2,\) and \(3,\)"):
        checks.compare("x", [1.0, 2.0], [1.0, 2.0, 3.0], "fp32")
    with pytest.raises(checks.CheckFailed, match=r"cannot compare shapes \(0,\) and \(0,\)"):
        checks.compare("x", [], [], "fp32")


def test_comparison_text_names_the_numbers():
    c = checks.compare("loss", [3.0, 4.0], [3.0, 4.0], "fp32")
    assert str(c) == ("loss: |diff|/|ref| 0, max |diff| 0 over 2 values, within rtol 0.0001 (atol 1e-05 per "
                      "value)")


def _history(acc, status="ok"):
    return {"status": status, "plugin": "torch_ddp", "precision": "fp32", "error": "boom",
            "epochs": [{"eval_accuracy": 0.2}, {"eval_accuracy": acc}]}


def test_convergence_threshold_is_inclusive_and_reads_the_last_epoch():
    assert checks.require_converged(_history(0.55), 0.55) == 0.55
    with pytest.raises(checks.CheckFailed, match=r"torch_ddp fp32: held-out accuracy 0.549 < required 0.55 "
                                                 r"after 2 epochs"):
        checks.require_converged(_history(0.549), 0.55)
    with pytest.raises(checks.CheckFailed, match="accuracy nan"):
        checks.require_converged(_history(float("nan")), 0.55)
    with pytest.raises(checks.CheckFailed, match="^torch_ddp: boom$"):
        checks.require_converged(_history(0.9, status="error"), 0.55)


# --- budgets: a Verdict's words and the single-field change ---------------------------------------------
def test_verdict_text_and_report_cell():
    v = budgets.Verdict("gemini", "bf16", 128, "device ms/step", 51.0, 50.0, 0.02, "regressed", "device_time")
    assert str(v) == "gemini bf16 bs=128: device ms/step 51 vs budget 50 (+2.0%)"
    assert v.short() == "device_time regressed (+2.0%)"
    p = budgets.Verdict("gemini", "bf16", 128, "images/s", 990.0, 1000.0, -0.01, "pass", "throughput", "why")
    assert str(p) == "gemini bf16 bs=128: images/s 990 vs budget 1000 (-1.0%) pass; why"
    assert budgets.verdict_cell([v, p]) == "device_time regressed (+2.0%); throughput pass (-1.0%)"
    assert budgets.verdict_cell([]) == "no budget"
    s = budgets.Verdict("gemini", "bf16", 128, "status oom", math.nan, 1000.0, math.nan, group="status")
    assert s.short() == "status oom" and s.outcome == "regressed"


def test_change_of_one_field():
    assert budgets.change({"images_per_s": 90.0}, {"images_per_s": 100.0}) == pytest.approx(-0.1)
    assert budgets.change({"x": 3.0}, {"x": 2.0}, "x") == pytest.approx(0.5)
    assert budgets.change({}, {"images_per_s": 100.0}) is None
    assert budgets.change({"images_per_s": 90.0}, {"images_per_s": 0.0}) is None
    assert budgets.change({"images_per_s": 90.0}, {}) is None


@pytest.mark.parametrize("value,ok", [(1.0, True), (1e-300, True), (7, True), (0.0, False), (-1.0, False),
                                      (math.nan, False), (math.inf, False), (True, False), (None, False),
                                      ("1.0", False)])
def test_valid_value(value, ok):
    assert budgets.valid_value(value) is ok


def test_mutation_survivors_of_the_parity_rules():  # docs/mutation.md
    # nine values: the absolute part is atol * sqrt(9) = 3e-5 (not atol * 9 * 0.5)
    assert checks.compare("x", [0.0] * 9, [2.9e-5] + [0.0] * 8, "fp32").ok
    assert not checks.compare("x", [0.0] * 9, [3.1e-5] + [0.0] * 8, "fp32").ok
    history = _history(0.9, status="oom")
    del history["error"]
    with pytest.raises(checks.CheckFailed, match="^torch_ddp: oom$"):
        checks.require_converged(history, 0.55)
    three = {"status": "ok", "plugin": "p", "precision": "fp32",
             "epochs": [{"eval_accuracy": 0.1}, {"eval_accuracy": 0.2}, {"eval_accuracy": 0.6}]}
    assert checks.require_converged(three, 0.55) == 0.6


def test_a_metric_this_run_did_not_measure_says_so_instead_of_nan():
    # a budget with device time against a point measured before device time existed
    v = budgets.Verdict("gemini", "bf16", 128, "device ms/step", math.nan, 46.58, math.nan, "regressed",
                        "device_time", "this run measured device_ms_per_step = None")
    assert str(v) == ("gemini bf16 bs=128: device ms/step (not measured; budget 46.58); "
                      "this run measured device_ms_per_step = None")
    assert v.short() == "device_time regressed (not measured)"


# --- the learning-rate schedule (vitcore.training.schedule) ---------------------------------------------------------
def _lrs(total, warmup, base=1.0, steps=None):
    """The learning rate of each step t = 0..steps, read from the optimizer as train_step runs it."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = warmup_cosine(opt, total, warmup)
    got = []
    for _ in range(total + 1 if steps is None else steps):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return got, opt, sched


def test_schedule_warms_up_linearly_then_falls_on_half_a_cosine_to_zero():
    got, _, _ = _lrs(12, 3, base=2e-3)
    c = [0.5 * (1 + math.cos(math.pi * k / 9)) for k in range(10)]  # k = t - warmup over 12 - 3 steps
    want = [2e-3 / 3, 2 * 2e-3 / 3, 2e-3] + [2e-3 * x for x in c]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert got[3] == pytest.approx(2e-3, rel=1e-12) and max(got) == pytest.approx(2e-3, rel=1e-12)  # peak = base
    assert got[-1] == pytest.approx(0.0, abs=1e-18)  # after the last step: zero, not half of it


@pytest.mark.parametrize("total,warmup,want", [
    (4, 0, [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0]),
    (4, 3, [1 / 3, 2 / 3, 1.0, 1.0, 0.0]),  # one decay step: the step after it is at zero
    (3, 3, [1 / 3, 2 / 3, 1.0, 1.0]),  # all warm-up: no decay to divide by, and no crash after the last step
])
def test_schedule_edges(total, warmup, want):
    got, _, _ = _lrs(total, warmup)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_schedule_resumed_from_its_state_continues_exactly():
    full, _, _ = _lrs(10, 2)
    _, opt, sched = _lrs(10, 2, steps=5)
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = warmup_cosine(fresh, 10, 2)
    resumed.load_state_dict(sched.state_dict())
    fresh.param_groups[0]["lr"] = opt.param_groups[0]["lr"]  # the optimizer's state carries its lr
    got = []
    for _ in range(6):
        got.append(fresh.param_groups[0]["lr"])
        fresh.step()
        resumed.step()
    assert got == full[5:]
