"""The one regression rule on CPU: device time (2%), launches (exact), memory (3%) by threshold,
wall throughput statistically over window samples; budget files per device; fail-closed baselines."""

import json
import math

import pytest

from vitcore import VitcoreError, budgets


def windows(center, n=6, spread=0.01):
    """n samples (per-process medians) evenly spread +-spread around center (deterministic)."""
    return [center * (1 + spread * (2 * i / (n - 1) - 1)) for i in range(n)]


def point(ips=1000.0, alloc=4.0, reserved=5.0, device_ms=50.0, launches=1285.0, spread=0.01, **kw):
    return {"plugin": "gemini", "precision": "bf16", "profile": "fast", "model": "vit-base",
            "world_size": 1, "batch_size": 128, "status": "ok", "images_per_s": ips, "spread": spread,
            "images_per_s_process_medians": windows(ips, spread=spread / 2), "processes": 6,
            "device_ms_per_step": device_ms, "launches_per_step": launches,
            "peak_mem_allocated_gib": alloc, "peak_mem_reserved_gib": reserved, "repeats": 5,
            "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "torch": "2.11.0+cu130", "cuda": "13.0",
            "date": "2026-11-24", "git_sha": "abc", "dataset": "d", "weights": "w"} | kw


@pytest.fixture
def book(tmp_path):
    budgets.update(tmp_path, point())
    return tmp_path


def ref(folder):
    return budgets.lookup(budgets.load(folder, point()), point())


def outcomes(p, r, **kw):
    """Each gate group's outcome: the worst of its fields' (memory has allocated and reserved)."""
    rank = ("regressed", "improved", "inconclusive", "pass")
    out = {}
    for v in budgets.judge(p, r, **kw):
        out[v.group] = min(out.get(v.group, "pass"), v.outcome, key=rank.index)
    return out


def test_unchanged_point_passes_every_metric(book):
    assert outcomes(point(), ref(book)) == {"throughput": "pass", "device_time": "pass", "launches": "pass",
                                            "memory": "pass"}


def test_ten_percent_slower_wall_time_regresses_naming_everything(book):
    (v,) = budgets.compare(point(ips=900.0), ref(book))
    assert v.metric == "images/s" and v.group == "throughput"
    assert str(v).startswith("gemini bf16 bs=128: images/s 900 vs budget 1000 (-10.0%)")
    assert "99% interval" in str(v)


@pytest.mark.parametrize("device_ms,outcome", [(50.9, "pass"), (51.1, "regressed"), (48.9, "improved")])
def test_device_time_at_the_two_percent_boundary(book, device_ms, outcome):
    assert outcomes(point(device_ms=device_ms), ref(book))["device_time"] == outcome


# The H100 case (reports/h100-gate/2026-11-25-546c4d3, check2): 331.84 ms at 1965 MHz against 324.06 at 1980.
@pytest.mark.parametrize("device_ms,cur_mhz,base_mhz,outcome", [
    (331.84, 1965, 1980, "inconclusive"),  # +2.4%, the clock explains up to +0.76%: within 2.76%
    (331.84, 1980, 1980, "regressed"),     # the same time at full clock
    (335.00, 1965, 1980, "regressed"),     # +3.4%: more than the clock explains
    (331.84, 1990, 1980, "regressed"),     # a faster clock explains nothing
    (331.84, None, 1980, "regressed"),     # a clock not read: fail closed
    (328.00, 1965, 1980, "pass"),          # within 2% whatever the clock
])
def test_device_time_beyond_tolerance_at_a_lower_clock_is_inconclusive(tmp_path, device_ms, cur_mhz, base_mhz,
                                                                       outcome):
    budgets.update(tmp_path, point(device_ms=324.06, device_sm_clock_mhz=base_mhz))
    got = point(device_ms=device_ms, device_sm_clock_mhz=cur_mhz)
    (v,) = budgets.judge(got, ref(tmp_path), groups=("device_time",))
    assert v.outcome == outcome
    if outcome == "inconclusive":
        assert "1965 MHz against 1980" in str(v) and "0.8%" in str(v) and v.short() == "device_time inconclusive (clock 1965 vs 1980 MHz)"


def test_points_without_the_device_clock_use_their_windows_clocks(tmp_path):
    """Records made before device_sm_clock_mhz existed carry the clock read at each window's end."""
    budgets.update(tmp_path, point(device_ms=324.06, host_sm_clock_mhz_windows=[1980] * 5))
    got = point(device_ms=331.84, host_sm_clock_mhz_windows=[1965, 1965, 1965, 1965, 1950])
    (v,) = budgets.judge(got, ref(tmp_path), groups=("device_time",))
    assert v.outcome == "inconclusive" and "1965 MHz against 1980" in str(v)


@pytest.mark.parametrize("launches,outcome", [(1285.0, "pass"), (1286.0, "regressed"), (1284.0, "improved")])
def test_launches_are_compared_exactly(book, launches, outcome):
    assert outcomes(point(launches=launches), ref(book))["launches"] == outcome


@pytest.mark.parametrize("alloc,outcome", [(4.119, "pass"), (4.121, "regressed"), (3.87, "improved")])
def test_memory_at_the_three_percent_boundary(book, alloc, outcome):
    assert outcomes(point(alloc=alloc), ref(book))["memory"] == outcome


def test_reserved_memory_is_gated_too(book):
    (v,) = budgets.compare(point(reserved=5.2), ref(book))
    assert v.metric == "peak_mem_reserved_gib" and v.delta == pytest.approx(0.04)


def test_steady_state_memory_is_compared_where_both_sides_have_it(tmp_path):
    # The first steps' peak varies between runs (timing.timed); the steady-state one decides.
    budgets.update(tmp_path, point(alloc=4.0, steady_mem_allocated_gib=3.5, steady_mem_reserved_gib=4.5))
    book = budgets.lookup(budgets.load(tmp_path, point()), point())
    assert budgets.compare(point(alloc=4.3, steady_mem_allocated_gib=3.5, steady_mem_reserved_gib=4.5), book) == []
    (v,) = budgets.compare(point(alloc=4.0, steady_mem_allocated_gib=3.7, steady_mem_reserved_gib=4.5), book)
    assert v.metric == "steady_mem_allocated_gib" and v.delta == pytest.approx(3.7 / 3.5 - 1)
    (v,) = budgets.compare(point(alloc=4.3), book)  # a point from before steady-state peaks existed
    assert v.metric == "peak_mem_allocated_gib"


def test_noisy_windows_are_inconclusive_and_name_the_detectable_change(tmp_path):
    budgets.update(tmp_path, point(spread=0.3))
    (v,) = budgets.judge(point(ips=960.0, spread=0.3), ref(tmp_path), groups=("throughput",))
    assert v.outcome == "inconclusive" and "detects" in v.detail and "processes per side would decide" in v.detail


def test_fewer_than_five_processes_a_side_never_decide_wall_time(tmp_path):
    # windows of one process are not independent samples: the process is (docs/gate.md)
    budgets.update(tmp_path, point(images_per_s_process_medians=windows(1000.0, n=4)))
    few = point(ips=500.0, images_per_s_process_medians=windows(500.0, n=4))
    (v,) = budgets.judge(few, ref(tmp_path), groups=("throughput",))
    assert v.outcome == "inconclusive" and "too few processes to decide at 99% (5 a side suffice" in v.detail
    assert budgets.MIN_PROCESSES == 5


def test_process_medians_of_points_recorded_with_pooled_windows_only():
    from vitcore.points import process_medians

    old = {"images_per_s": 2.0, "images_per_s_windows": [1, 2, 3, 10, 20, 30], "repeats": 3, "processes": 2}
    assert process_medians(old) == [2, 20]
    assert process_medians(old | {"processes": 1}) == [2.0]  # windows do not split into processes


def test_error_or_oom_point_against_an_ok_budget_is_a_regression(book):
    for status in ("oom", "error"):
        (v,) = budgets.compare(point(status=status), ref(book))
        assert v.group == "status" and v.metric == f"status {status}"


def test_failed_variant_or_injected_points_are_not_budgets(tmp_path):
    with pytest.raises(VitcoreError, match="status oom cannot be a budget"):
        budgets.update(tmp_path, point(status="oom"))
    with pytest.raises(VitcoreError, match="ablation variant 'compile=True' is not a budget"):
        budgets.update(tmp_path, point(variant="compile=True"))
    with pytest.raises(VitcoreError, match=r"injected regression \(device\+1ms\) is not a budget"):
        budgets.update(tmp_path, point(injected="device+1ms"))


@pytest.mark.parametrize("groups,expected", [(("memory",), ["peak_mem_allocated_gib"]), (("throughput",), ["images/s"]),
                                             (("device_time",), ["device ms/step"])])
def test_compare_only_the_groups_asked(book, groups, expected):
    got = budgets.compare(point(ips=800.0, alloc=4.4, device_ms=60.0), ref(book), groups=groups)
    assert [v.metric for v in got] == expected


def test_other_device_is_no_budget(book):
    with pytest.raises(budgets.NoBudget, match="no budget file for device 'nvidia-a100"):
        budgets.load(book, point(gpu_name="NVIDIA A100-SXM4-80GB"))


def test_entry_holds_measurements_and_provenance_never_a_tolerance(book):
    entry = ref(book)
    assert entry["source"]["git_sha"] == "abc" and entry["processes"] == 6
    assert entry["images_per_s_process_medians"] == windows(1000.0, spread=0.005)
    assert entry["device_ms_per_step"] == 50.0 and entry["launches_per_step"] == 1285.0
    assert not any("allowed" in k or "tol" in k for k in entry)
    assert budgets.tolerances() == {"throughput": 0.05, "device_time": 0.02, "launches": 0.0, "memory": 0.03}


def test_fail_on_overrides_only_what_it_names(book):
    assert outcomes(point(device_ms=51.5), ref(book))["device_time"] == "regressed"
    tol = budgets.parse_fail_on("device_time:5%")
    assert outcomes(point(device_ms=51.5), ref(book), tol=tol)["device_time"] == "pass"
    assert outcomes(point(alloc=4.2), ref(book), tol=tol)["memory"] == "regressed"  # still 3%


def test_entry_of_an_older_version_without_device_time_is_a_skip(tmp_path):
    budgets.update(tmp_path, point(device_ms_per_step=None, launches_per_step=None))
    with pytest.raises(budgets.NoBudget, match="has no device_time .* re-record it"):
        budgets.check(tmp_path, point(), "device_time")


@pytest.mark.parametrize("bad", [0.0, float("nan"), -1.0])
def test_zero_or_nan_reference_value_is_an_error(bad):
    with pytest.raises(VitcoreError, match="must be a positive number"):
        budgets.judge(point(), point(device_ms=bad))


def test_budget_table_gives_each_point_the_tests_verdicts(tmp_path):
    from vitcore import report

    budgets.update(tmp_path, point(batch_size=32))
    rows = [point(batch_size=32, ips=850.0, test="performance"), point(batch_size=8, test="performance")]
    table = report.budget_table(rows, tmp_path).splitlines()[2:]
    assert "| gemini | bf16 | 8 |" in table[0] and "skip: no budget entry" in table[0]
    assert "| gemini | bf16 | 32 | 850 (1%) | 50.00 | 1285 | regressed (-15.0%) | pass (+0.0%) |" in table[1]


# --- the gate: a run against a baseline run, failing closed -------------------------------------
DEVICE = "nvidia-h100-80gb-hbm3-x1-torch2.11.0-cuda13.0"


def test_baseline_of_another_device_is_an_error_naming_both():
    with pytest.raises(VitcoreError, match="measured on nvidia-a100.*; this run is on nvidia-h100"):
        budgets.check_baseline([point(gpu_name="NVIDIA A100-SXM4-80GB")], source="b.jsonl", device=DEVICE)


def test_empty_or_failed_baseline_is_an_error():
    for base in ([], [point(status="error")]):
        with pytest.raises(VitcoreError, match="holds no finished point"):
            budgets.check_baseline(base, source="b.jsonl", device=DEVICE)


@pytest.mark.parametrize("field", ["images_per_s", "device_ms_per_step", "steady_mem_allocated_gib"])
def test_zero_or_nan_in_a_baseline_is_an_error_up_front(field):
    for bad in (0.0, float("nan")):
        with pytest.raises(VitcoreError, match=f"has {field} = "):
            budgets.check_baseline([point(**{field: bad})], source="b.jsonl", device=DEVICE)


def test_baseline_points_the_run_will_not_measure_are_an_error_unless_allowed():
    base = [point(), point(batch_size=32)]
    planned = {budgets.points.key(point())}
    with pytest.raises(VitcoreError, match=r"1 point\(s\) this run does not measure \(gemini\|bf16\|fast\|vit-base\|ws1\|bs32\)"):
        budgets.check_baseline(base, source="b.jsonl", device=DEVICE, planned=planned)
    budgets.check_baseline(base, source="b.jsonl", device=DEVICE, planned=planned, allow_missing=True)


def test_compare_runs_lists_each_outcome_and_missing_points():
    base = [point(), point(batch_size=32)]
    gate = budgets.compare_runs([point(ips=800.0, device_ms=45.0)], base)
    assert any("images/s 800" in r for r in gate.regressions)
    assert any("bs32: in the baseline, missing from this run" in r for r in gate.regressions)
    assert any("device ms/step 45" in i and "improved" in i for i in gate.improvements)
    assert gate.failed() and not budgets.compare_runs([point()], base, allow_missing=True).failed()
    improved_only = budgets.compare_runs([point(device_ms=45.0)], [point()])
    assert not improved_only.failed() and improved_only.failed(strict=True)


def test_current_error_against_ok_baseline_fails_the_gate():
    gate = budgets.compare_runs([point(status="oom", images_per_s=None)], [point()])
    assert gate.failed() and "status oom" in gate.regressions[0]
    assert math.isnan(gate.verdicts[budgets.points.key(point())][0].measured)


def test_budget_file_round_trip_is_json(book):
    data = json.loads(budgets.budget_path(book, point()).read_text())
    assert data["identity"] == DEVICE and list(data["entries"]) == ["gemini|bf16|fast|vit-base|ws1|bs128"]


@pytest.mark.parametrize("bad", [0.0, float("nan"), None])
def test_a_gated_value_the_run_did_not_measure_is_a_regression(book, bad):
    (v,) = budgets.compare(point(device_ms=bad), ref(book), groups=("device_time",))
    assert v.outcome == "regressed" and f"this run measured device_ms_per_step = {bad!r}" in v.detail


def test_device_time_recorded_with_copies_faces_kernels_plus_copies(book):
    # the book's entry predates the split (copy_ms_per_step None): 49 ms kernels + 1.5 ms copies = +1%
    assert outcomes(point(device_ms=49.0, copy_ms_per_step=1.5), ref(book))["device_time"] == "pass"
    assert outcomes(point(device_ms=50.0, copy_ms_per_step=1.5), ref(book))["device_time"] == "regressed"


def test_split_entries_compare_kernels_only(tmp_path):
    budgets.update(tmp_path, point(copy_ms_per_step=3.0))
    assert outcomes(point(device_ms=50.5, copy_ms_per_step=9.0), ref(tmp_path))["device_time"] == "pass"


def test_inconclusive_report_cell_names_what_it_can_detect(tmp_path):
    budgets.update(tmp_path, point(spread=0.3))
    (v,) = budgets.judge(point(ips=960.0, spread=0.3), ref(tmp_path), groups=("throughput",))
    assert v.short().startswith("throughput inconclusive (detects ") and v.short().endswith("%)")
    few = point(images_per_s_process_medians=[1000.0])
    (v,) = budgets.judge(few, ref(tmp_path), groups=("throughput",))
    assert v.short() == "throughput inconclusive (1 vs 6 processes: too few)"


def test_baseline_fallback_memory_of_zero_is_refused_up_front():
    with pytest.raises(VitcoreError, match="has peak_mem_allocated_gib = 0.0"):
        budgets.check_baseline([point(alloc=0.0)], source="b.jsonl", device=DEVICE)


# --- every gated metric in both directions, just inside and just outside its tolerance (issue 18) --------
def _flat(ips, n=5):
    """n processes of exactly `ips`: the Hodges-Lehmann interval collapses to the one ratio."""
    return point(ips=ips, images_per_s_process_medians=[ips] * n)


# (field of point(), the verdict's metric, reference value, inside-worse, outside-worse, inside-better,
# outside-better)
THRESHOLD_CASES = {
    "device_time": ("device_ms", "device ms/step", 100.0, 101.99, 102.01, 98.01, 97.99),
    "memory (allocated)": ("alloc", "peak_mem_allocated_gib", 100.0, 102.99, 103.01, 97.01, 96.99),
    "memory (reserved)": ("reserved", "peak_mem_reserved_gib", 100.0, 102.99, 103.01, 97.01, 96.99),
}


def _verdict_of(metric, p, ref, **kw):
    (v,) = [v for v in budgets.judge(p, ref, **kw) if v.metric == metric]
    return v


@pytest.mark.parametrize("case", THRESHOLD_CASES)
def test_threshold_metrics_just_inside_and_just_outside_both_ways(case):
    field, metric, ref_value, in_worse, out_worse, in_better, out_better = THRESHOLD_CASES[case]
    base = point(**{field: ref_value})
    expected = {in_worse: "pass", out_worse: "regressed", in_better: "pass", out_better: "improved",
                ref_value: "pass"}
    for value, outcome in expected.items():
        v = _verdict_of(metric, point(**{field: value}), base)
        assert v.outcome == outcome, (case, value)
        assert v.delta == pytest.approx(value / ref_value - 1, rel=1e-12)
        assert (v.measured, v.budget, v.group) == (value, ref_value, case.split()[0])


@pytest.mark.parametrize("launches,outcome", [(1000.0, "pass"), (1000.5, "regressed"), (999.5, "improved")])
def test_launches_tolerate_no_change_either_way(launches, outcome):
    (v,) = budgets.judge(point(launches=launches), point(launches=1000.0), groups=("launches",))
    assert (v.outcome, v.metric, v.delta) == (outcome, "launches/step", launches / 1000.0 - 1)


@pytest.mark.parametrize("case", THRESHOLD_CASES)
def test_a_change_of_exactly_the_tolerance_passes(case):
    # 5/4 and 3/4 are exact in binary: the boundary itself is inside the tolerance, both ways
    field, metric = THRESHOLD_CASES[case][:2]
    group = case.split()[0]
    tol = budgets.parse_fail_on(f"{group}:25%")
    assert tol == {group: 0.25}
    for value, outcome in ((5.0, "pass"), (3.0, "pass"), (5.000001, "regressed"), (2.999999, "improved")):
        v = _verdict_of(metric, point(**{field: value}), point(**{field: 4.0}), tol=tol)
        assert v.outcome == outcome, value


@pytest.mark.parametrize("current,outcome", [(949.0, "regressed"), (951.0, "pass"), (1049.0, "pass"),
                                             (1051.0, "improved"), (1000.0, "pass")])
def test_throughput_five_percent_both_ways(current, outcome):
    (v,) = budgets.judge(_flat(current), _flat(1000.0), groups=("throughput",))
    assert (v.outcome, v.metric, v.group) == (outcome, "images/s", "throughput")
    assert v.delta == pytest.approx(current / 1000 - 1, rel=1e-9)
    assert v.note == "detects 0.0%"


def test_throughput_interval_straddling_the_tolerance_is_inconclusive():
    # current 900, 1000 x4 against 1000 x5: interval -10%..0% straddles -5%
    cur = point(images_per_s_process_medians=[900.0, 1000.0, 1000.0, 1000.0, 1000.0])
    (v,) = budgets.judge(cur, _flat(1000.0), groups=("throughput",))
    assert v.outcome == "inconclusive" and v.delta == 0.0 and v.note == "detects 5.0%"
    assert v.detail.startswith("inconclusive (+0.0%, 99% interval -10.0%..+0.0%, p=")


def test_throughput_tolerance_follows_fail_on():
    tol = budgets.parse_fail_on("throughput:10%")
    (v,) = budgets.judge(_flat(920.0), _flat(1000.0), tol=tol, groups=("throughput",))
    assert v.outcome == "pass"
    (v,) = budgets.judge(_flat(890.0), _flat(1000.0), tol=tol, groups=("throughput",))
    assert v.outcome == "regressed"


def test_throughput_without_samples_on_one_side_is_inconclusive():
    bare = point(images_per_s_process_medians=None, images_per_s_windows=None, images_per_s=None)
    (v,) = budgets.judge(point(), bare | {"images_per_s": 1000.0, "images_per_s_process_medians": []},
                         groups=("throughput",))
    assert v.outcome == "inconclusive"


@pytest.mark.parametrize("text,expected", [
    ("memory:5%", {"memory": 0.05}), ("memory:2.5%", {"memory": 0.025}),
    ("throughput:5%, memory:2%", {"throughput": 0.05, "memory": 0.02}),
    ("device_time:0%,launches:1%", {"device_time": 0.0, "launches": 0.01}), ("memory:1%,", {"memory": 0.01})])
def test_parse_fail_on_values(text, expected):
    assert budgets.parse_fail_on(text) == expected


@pytest.mark.parametrize("text", ["memory:5", "memory5%", "mem:5%", "memory:-1%", "memory:five%", ",", "",
                                  "memory:5%%", "peak_mem_allocated_gib:3%"])
def test_parse_fail_on_refuses_bad_items(text):
    with pytest.raises(budgets.ConfigError, match="--fail-on|bad --fail-on item"):
        budgets.parse_fail_on(text)


def test_parse_fail_on_error_names_the_item_and_the_groups():
    with pytest.raises(budgets.ConfigError, match=r"^bad --fail-on item 'mem:5%'; expected METRIC:N% with METRIC "
                                                  r"one of throughput, device_time, launches, memory \(e\.g\. "):
        budgets.parse_fail_on("memory:1%,mem:5%")
    with pytest.raises(budgets.ConfigError, match=r"^--fail-on ' , ' names no threshold$"):
        budgets.parse_fail_on(" , ")


@pytest.mark.parametrize("field", ["alloc", "reserved"])
def test_fail_on_memory_threshold_decides_the_gate(field):
    base = [point(**{field: 10.0})]
    grown = [point(**{field: 10.4})]  # +4%
    assert budgets.compare_runs(grown, base).failed()
    assert not budgets.compare_runs(grown, base, budgets.parse_fail_on("memory:5%")).failed()
    assert budgets.compare_runs(grown, base, budgets.parse_fail_on("memory:3.9%")).failed()
    shrunk = budgets.compare_runs([point(**{field: 9.6})], base, budgets.parse_fail_on("memory:5%"))
    assert not shrunk.improvements and not shrunk.failed(strict=True)
    shrunk = budgets.compare_runs([point(**{field: 9.6})], base, budgets.parse_fail_on("memory:3%"))
    assert len(shrunk.improvements) == 1 and shrunk.failed(strict=True) and not shrunk.failed()


def test_reserved_memory_regression_is_named_in_the_gate():
    gate = budgets.compare_runs([point(reserved=5.2)], [point()])
    assert gate.regressions == ["gemini bf16 bs=128: peak_mem_reserved_gib 5.2 vs budget 5 (+4.0%)"]
    assert gate.improvements == [] and gate.inconclusive == [] and gate.new == []


def test_unchanged_run_against_a_different_baseline_passes_every_metric():
    # not a point against itself: every value differs, each within its tolerance
    base = point(ips=1000.0, device_ms=50.0, alloc=4.0, reserved=5.0, images_per_s_process_medians=[1000.0] * 5)
    cur = point(ips=990.0, device_ms=50.9, alloc=4.1, reserved=4.9, images_per_s_process_medians=[990.0] * 5)
    gate = budgets.compare_runs([cur], [base])
    assert not gate.failed(strict=True)
    assert (gate.regressions, gate.improvements, gate.inconclusive, gate.new) == ([], [], [], [])
    outcomes_ = [(v.group, v.outcome) for v in gate.verdicts[budgets.points.key(cur)]]
    assert outcomes_ == [("throughput", "pass"), ("device_time", "pass"), ("launches", "pass"), ("memory", "pass"),
                         ("memory", "pass")]


@pytest.mark.parametrize("status", ["oom", "error"])
def test_failed_point_against_an_ok_baseline_is_one_regression_line(status):
    cur = point(status=status, images_per_s=None, device_ms_per_step=None, launches_per_step=None,
                peak_mem_allocated_gib=None, peak_mem_reserved_gib=None)
    gate = budgets.compare_runs([cur], [point()])
    assert gate.regressions == [f"gemini bf16 fast  vit-base 1 128: gemini bf16 bs=128: status {status} "
                                "(not measured; budget 1000)"]
    assert gate.failed() and gate.improvements == [] and gate.new == []
    (v,) = gate.verdicts[budgets.points.key(cur)]
    assert (v.group, v.metric, v.outcome, v.budget) == ("status", f"status {status}", "regressed", 1000.0)


def test_failed_baseline_point_is_not_a_reference():
    # an error point in the baseline cannot be compared with: the current point is new, not a pass
    gate = budgets.compare_runs([point()], [point(status="error")])
    assert gate.verdicts == {} and gate.new == [f"gemini bf16 fast  vit-base 1 128: not in the baseline (on {DEVICE})"]
    assert not gate.failed()


def test_baseline_points_of_another_device_are_not_missing():
    other = point(gpu_name="NVIDIA A100-SXM4-80GB", batch_size=32)
    gate = budgets.compare_runs([point()], [point(), other])
    assert gate.regressions == [] and not gate.failed()
    gate = budgets.compare_runs([point()], [point(), point(batch_size=32)])
    assert gate.regressions == ["gemini|bf16|fast|vit-base|ws1|bs32: in the baseline, missing from this run"]


def test_make_entry_records_exactly_the_gated_values_and_provenance():
    entry = budgets.make_entry(point(steady_mem_allocated_gib=3.5, copy_ms_per_step=1.0))
    assert sorted(entry) == sorted([
        "copy_ms_per_step", "device_ms_per_step", "device_sm_clock_mhz", "host_sm_clock_mhz_windows", "images_per_s",
        "images_per_s_process_medians", "images_per_s_windows", "launches_per_step", "peak_mem_allocated_gib", "peak_mem_reserved_gib",
        "steady_mem_allocated_gib", "steady_mem_reserved_gib", "spread", "processes", "source"])
    assert (entry["steady_mem_allocated_gib"], entry["steady_mem_reserved_gib"], entry["processes"]) == (3.5, None, 6)
    assert entry["source"]["git_sha"] == "abc" and entry["source"]["repeats"] == 5
    assert budgets.make_entry(point(processes=None))["processes"] == 1


def test_check_returns_the_entry_and_one_groups_verdicts(book):
    entry, verdicts = budgets.check(book, point(alloc=4.2), "memory")
    assert entry["peak_mem_allocated_gib"] == 4.0
    assert [(v.metric, v.outcome) for v in verdicts] == [("peak_mem_allocated_gib", "regressed"),
                                                         ("peak_mem_reserved_gib", "pass")]
    with pytest.raises(budgets.NoBudget, match=r"no budget entry 'gemini\|bf16\|fast\|vit-base\|ws1\|bs8'"):
        budgets.check(book, point(batch_size=8), "memory")
    _, (v,) = budgets.check(book, point(status="oom"), "memory")
    assert v.group == "status"


# --- what mutation testing found unpinned (docs/mutation.md) ------------------------------------------------
def test_a_metric_the_reference_lacks_is_skipped_and_the_rest_judged():
    ref_ = point()
    del ref_["images_per_s"], ref_["images_per_s_process_medians"]
    assert [v.group for v in budgets.judge(point(), ref_)] == ["device_time", "launches", "memory", "memory"]


def test_an_unmeasured_metric_is_one_regressed_verdict_and_the_rest_are_judged():
    verdicts = budgets.judge(point(device_ms=None), point())
    assert [(v.group, v.outcome) for v in verdicts] == [
        ("throughput", "pass"), ("device_time", "regressed"), ("launches", "pass"), ("memory", "pass"),
        ("memory", "pass")]
    v = verdicts[1]
    assert (v.metric, v.budget, v.group, v.note) == ("device ms/step", 50.0, "device_time", "")
    assert math.isnan(v.measured) and math.isnan(v.delta)
    assert verdicts[2].detail == "" and verdicts[2].note == ""


def test_reference_error_names_the_point_and_field():
    with pytest.raises(VitcoreError, match=r"^gemini\|bf16\|fast\|vit-base\|ws1\|bs128: reference device_ms_per_step is "
                                           r"0\.0; a baseline value must be a positive number \(re-record it\)$"):
        budgets.judge(point(), point(device_ms=0.0))


def test_missing_budget_file_names_the_device_and_the_files_there(tmp_path):
    msg = (r"^no budget file for device 'nvidia-a100-sxm4-80gb-x1-torch2\.11\.0-cuda13\.0' in {} \(budgets exist "
           r"for: {}\); run with --update-budgets on this device to record one$")
    with pytest.raises(budgets.NoBudget, match=msg.format(tmp_path, "none")):
        budgets.load(tmp_path, point(gpu_name="NVIDIA A100-SXM4-80GB"))
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "c.txt").write_text("{}")
    with pytest.raises(budgets.NoBudget, match=msg.format(tmp_path, "a, b")):
        budgets.load(tmp_path, point(gpu_name="NVIDIA A100-SXM4-80GB"))


def test_missing_entry_message_is_exact(book):
    with pytest.raises(budgets.NoBudget, match=r"^no budget entry 'gemini\|bf16\|fast\|vit-base\|ws1\|bs8' for this "
                                               r"device; run with --update-budgets to record one$"):
        budgets.lookup(budgets.load(book, point()), point(batch_size=8))


def test_update_adds_entries_to_an_existing_file(tmp_path):
    path, entry = budgets.update(tmp_path, point())
    assert path == tmp_path / f"{DEVICE}.json" and entry == budgets.make_entry(point())
    budgets.update(tmp_path, point(batch_size=32, device_ms=40.0))
    budgets.update(tmp_path, point(device_ms=45.0))  # re-recording replaces the entry
    book = json.loads(path.read_text())
    assert book["identity"] == DEVICE
    assert book["device"] == {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "torch": "2.11.0+cu130",
                              "cuda": "13.0"}
    assert {k: e["device_ms_per_step"] for k, e in book["entries"].items()} == {
        "gemini|bf16|fast|vit-base|ws1|bs128": 45.0, "gemini|bf16|fast|vit-base|ws1|bs32": 40.0}


def test_check_baseline_messages_are_exact():
    with pytest.raises(VitcoreError, match=r"^baseline b\.jsonl was measured on nvidia-a100-sxm4-80gb-x1-torch2\.11\.0-"
                                           r"cuda13\.0, nvidia-h200-x1-torch2\.11\.0-cuda13\.0; this run is on nvidia-h100-"
                                           r"80gb-hbm3-x1-torch2\.11\.0-cuda13\.0: record a baseline on this device$"):
        budgets.check_baseline([point(gpu_name="NVIDIA H200"), point(gpu_name="NVIDIA A100-SXM4-80GB")],
                               source="b.jsonl", device=DEVICE)
    with pytest.raises(VitcoreError, match=r"^baseline b\.jsonl: gemini\|bf16\|fast\|vit-base\|ws1\|bs128 has "
                                           r"launches_per_step = -1\.0; a baseline value must be a positive number$"):
        budgets.check_baseline([point(launches=-1.0)], source="b.jsonl", device=DEVICE)
    # a zero on another device's point is not this run's business
    budgets.check_baseline([point(), point(gpu_name="NVIDIA H200", device_ms=0.0)], source="b", device=DEVICE)
    base = [point(batch_size=b) for b in (1, 2, 4, 8, 16)]
    with pytest.raises(VitcoreError, match=r"^baseline b has 4 point\(s\) this run does not measure \(gemini\|bf16\|fast\|"
                                           r"vit-base\|ws1\|bs2, gemini\|bf16\|fast\|vit-base\|ws1\|bs4, gemini\|bf16\|"
                                           r"fast\|vit-base\|ws1\|bs8 \.\.\.\); measure them or pass --allow-missing$"):
        budgets.check_baseline(base, source="b", device=DEVICE, planned={budgets.points.key(base[0])})
    with pytest.raises(VitcoreError, match=r"3 point\(s\) this run does not measure \([^.]*bs8\); measure"):
        budgets.check_baseline(base[:4], source="b", device=DEVICE, planned={budgets.points.key(base[0])})
    budgets.check_baseline(base, source="b", device=DEVICE, planned=None)
    budgets.check_baseline(base, source="b", device=DEVICE, planned={budgets.points.key(p) for p in base})


def test_gate_result_lists_each_outcome_line_exactly():
    base = [point(images_per_s_process_medians=[1000.0] * 5), point(batch_size=32)]
    cur = [point(device_ms=45.0, launches=1286.0, images_per_s_process_medians=[900.0, 1000.0, 1000.0, 1000.0,
                                                                                1000.0]),
           point(batch_size=32), point(batch_size=64)]
    gate = budgets.compare_runs(cur, base)
    assert gate.regressions == ["gemini bf16 bs=128: launches/step 1286 vs budget 1285 (+0.1%)"]
    assert gate.improvements == ["gemini bf16 bs=128: device ms/step 45 vs budget 50 (-10.0%) improved"]
    assert len(gate.inconclusive) == 1 and gate.inconclusive[0].startswith(
        "gemini bf16 bs=128: images/s 1000 vs budget 1000 (+0.0%) inconclusive; inconclusive (+0.0%, 99% interval "
        "-10.0%..+0.0%")
    assert gate.new == [f"gemini bf16 fast  vit-base 1 64: not in the baseline (on {DEVICE})"]
    assert list(gate.verdicts) == [budgets.points.key(cur[0]), budgets.points.key(cur[1])]
    assert gate.failed() and gate.failed(strict=True)
    assert budgets.GateResult({}, [], ["x"], [], []).failed(strict=True)
    assert not budgets.GateResult({}, [], ["x"], ["y"], ["z"]).failed()


def test_statistical_detail_names_processes_not_windows():
    few = point(images_per_s_process_medians=[1000.0, 1000.0])
    (v,) = budgets.judge(few, _flat(1000.0), groups=("throughput",))
    assert v.detail == ("inconclusive (+0.0%, no interval: too few processes, p=1, processes 2 vs 5): detects nothing; "
                        "too few processes to decide at 99% (5 a side suffice: --processes, --until-decided)")
    assert v.note == "2 vs 5 processes: too few" and v.delta == 0.0
    (v,) = budgets.judge(_flat(900.0), _flat(1000.0), groups=("throughput",))
    assert v.detail == "regressed (-10.0%, 99% interval -10.0%..-10.0%, p=0.0079, processes 5 vs 5)"
    # a reference without process medians falls back to its one images/s value
    ref_ = {"images_per_s": 1000.0, "images_per_s_process_medians": [], "plugin": "gemini"}
    (v,) = budgets.judge(_flat(1000.0), ref_, groups=("throughput",))
    assert (v.outcome, v.delta, v.note) == ("inconclusive", 0.0, "5 vs 1 processes: too few")


def test_a_failed_point_against_a_reference_without_throughput_is_still_one_regression():
    # a memory-only reference (a GPU-tier row, an older budget) has no images/s to show as the budget
    ref_ = point()
    del ref_["images_per_s"]
    (v,) = budgets.judge(point(status="oom"), ref_)
    assert (v.group, v.metric, v.outcome) == ("status", "status oom", "regressed")
    assert math.isnan(v.measured) and math.isnan(v.budget) and math.isnan(v.delta)
    assert str(v).startswith("gemini bf16 bs=128: status oom (not measured") and v.short() == "status oom"


def test_compare_applies_the_tolerances_it_is_given():
    # --fail-on device_time:1%: 1.5% more device time passes the default 2% and fails 1%
    assert budgets.compare(point(device_ms=50.75), point()) == []
    (v,) = budgets.compare(point(device_ms=50.75), point(), tol={"device_time": 0.01})
    assert (v.group, v.outcome) == ("device_time", "regressed")


def test_a_new_point_does_not_hide_the_regressions_after_it():
    gate = budgets.compare_runs([point(batch_size=32), point(device_ms=60.0)], [point()])
    assert gate.new == [f"gemini bf16 fast  vit-base 1 32: not in the baseline (on {DEVICE})"]
    assert [r.split(":")[1].strip() for r in gate.regressions] == ["device ms/step 60 vs budget 50 (+20.0%)"]


def test_a_budget_records_the_spread_it_was_measured_with(tmp_path):
    _, entry = budgets.update(tmp_path, point(spread=0.037))
    assert entry["spread"] == 0.037
    assert budgets.lookup(budgets.load(tmp_path, point()), point())["spread"] == 0.037


def test_fail_on_memory_reaches_the_gate_through_the_cli(tmp_path):
    # the "--fail-on memory:N% ignored": `vitcore report --baseline` must pass it to the gate
    import subprocess
    import sys

    (tmp_path / "cur.json").write_text(json.dumps([point(alloc=4.16, family="gemini")]))  # +4% allocated
    (tmp_path / "base.json").write_text(json.dumps([point(family="gemini")]))

    def gate(*extra):
        return subprocess.run([sys.executable, "-m", "vitcore.cli", "report", str(tmp_path / "cur.json"), "--out",
                               str(tmp_path / "r"), "--baseline", str(tmp_path / "base.json"), *extra],
                              capture_output=True, text=True, timeout=300)

    default = gate()
    assert default.returncode == 1 and "peak_mem_allocated_gib 4.16 vs budget 4 (+4.0%)" in default.stderr
    loose = gate("--fail-on", "memory:5%")
    assert loose.returncode == 0, loose.stderr[-2000:]
    assert "no regressions against" in loose.stdout and "memory:5%" in loose.stdout


@pytest.mark.parametrize("entry_date,point_date,kept", [("2026-11-25T17:00", "2026-11-25T17:00", True),
                                                        ("2026-11-25T17:00", "2026-11-25T14:00", True),
                                                        ("2026-11-25T14:00", "2026-11-25T17:00", False)])
def test_a_resumed_point_replaces_only_an_older_entry(tmp_path, entry_date, point_date, kept):
    """--update-budgets with --resume: a point measured after its entry (a recording split over device
    calls whose first budget file was lost) replaces it; an older resumed point keeps the entry."""
    from vitcore import gating

    budgets.update(tmp_path, point(date=entry_date))
    assert gating.has_budget(tmp_path, point(date=point_date)) is kept
