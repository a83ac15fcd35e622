"""The one regression rule on CPU: device time (+2%, one-sided, per device), launches (exact) and steady
allocated memory (0.5%) as portable two-sided invariants, each judged against the band the recording's
processes span; wall throughput statistically over per-process samples; reserved memory shown, never
gated; budget files per device; fail-closed baselines."""

import json
import math

import pytest

from tests.support.made_up import DEVICE, point, windows
from vitcore import VitcoreError
from vitcore.gate import budget_files, budgets


@pytest.fixture
def book(tmp_path):
    budget_files.update(tmp_path, point())
    return tmp_path


def ref(folder):
    return budget_files.lookup(budget_files.load(folder, point()), point())


def outcomes(p, r, **kw):
    """Each gate group's outcome: the worst of its fields' (one field each now; reserved is not gated)."""
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
    budget_files.update(tmp_path, point(device_ms=324.06, device_sm_clock_mhz=base_mhz))
    got = point(device_ms=device_ms, device_sm_clock_mhz=cur_mhz)
    (v,) = budgets.judge(got, ref(tmp_path), groups=("device_time",))
    assert v.outcome == outcome
    if outcome == "inconclusive":
        assert "1965 MHz against 1980" in str(v) and "0.8%" in str(v) and v.short() == "device_time inconclusive (clock 1965 vs 1980 MHz)"


def test_points_without_the_device_clock_use_their_windows_clocks(tmp_path):
    """Records made before device_sm_clock_mhz existed carry the clock read at each window's end."""
    budget_files.update(tmp_path, point(device_ms=324.06, host_sm_clock_mhz_windows=[1980] * 5))
    got = point(device_ms=331.84, host_sm_clock_mhz_windows=[1965, 1965, 1965, 1965, 1950])
    (v,) = budgets.judge(got, ref(tmp_path), groups=("device_time",))
    assert v.outcome == "inconclusive" and "1965 MHz against 1980" in str(v)


@pytest.mark.parametrize("launches,outcome", [(1285.0, "pass"), (1286.0, "regressed"), (1284.0, "improved")])
def test_launches_are_compared_exactly_and_fail_both_ways(book, launches, outcome):
    assert outcomes(point(launches=launches), ref(book))["launches"] == outcome
    (v,) = budgets.judge(point(launches=launches), ref(book), groups=("launches",))
    assert budgets.fails(v) is (outcome != "pass")  # two-sided: one launch fewer fails too
    assert budgets.compare(point(launches=launches), ref(book)) == ([v] if outcome != "pass" else [])


# steady allocated memory: 0.5% of 4.0 GiB is 0.02 GiB either way
@pytest.mark.parametrize("alloc,outcome", [(4.0199, "pass"), (4.0201, "regressed"), (3.9801, "pass"),
                                           (3.9799, "improved")])
def test_steady_allocated_memory_at_the_half_percent_boundary_both_ways(book, alloc, outcome):
    assert outcomes(point(alloc=alloc), ref(book))["memory"] == outcome
    (v,) = budgets.judge(point(alloc=alloc), ref(book), groups=("memory",))
    assert budgets.fails(v) is (outcome != "pass")  # two-sided: less memory than recorded fails too
    if outcome == "improved":
        assert v.detail == "the budget is stale (re-record it: --update-budgets)"


def test_reserved_memory_is_never_gated(book):
    """The H200's false alarm on unchanged code: torch_ddp bs32 reserved 5.756 vs 5.438 GiB and
    torch_ddp_fp16 bs32 4.625 vs 4.279 GiB (+5.9%, +8.1%), allocated equal: no verdict, no failure."""
    for cur, base in ((5.756, 5.438), (4.625, 4.279)):
        budget_files.update(book, point(reserved=base, peak_reserved=base * 1.1))
        grown = point(reserved=cur, peak_reserved=cur * 1.1)
        assert budgets.compare(grown, ref(book)) == []
        assert not any("reserved" in v.metric for v in budgets.judge(grown, ref(book)))
        assert not budgets.compare_runs([grown], [point(reserved=base)]).failed(strict=True)
    assert ref(book)["steady_mem_reserved_gib"] == 4.279  # recorded, to be shown beside the verdicts


def test_memory_is_steady_allocated_only_with_no_fallback_to_the_peak(tmp_path):
    # The whole run's peak (warm-up included) differs by up to 6.1% on unchanged code: never judged.
    budget_files.update(tmp_path, point(alloc=3.5, peak=4.0))
    book = budget_files.lookup(budget_files.load(tmp_path, point()), point())
    assert budgets.compare(point(alloc=3.5, peak=4.3), book) == []
    (v,) = budgets.compare(point(alloc=3.7, peak=4.0), book)
    assert (v.metric, v.group) == ("steady allocated GiB", "memory") and v.delta == pytest.approx(3.7 / 3.5 - 1)
    # a point without the steady value is not judged on its peak: it did not measure the gated value
    (v,) = budgets.compare(point(steady_mem_allocated_gib=None, peak=4.0), book)
    assert v.metric == "steady allocated GiB" and "this run measured steady_mem_allocated_gib = None" in v.detail
    # a reference without it (recorded before steady peaks existed) has no memory budget at all
    old = point(steady_mem_allocated_gib=None)
    assert [v.group for v in budgets.judge(point(), old)] == ["throughput", "device_time", "launches"]


def test_noisy_windows_are_inconclusive_and_name_the_detectable_change(tmp_path):
    budget_files.update(tmp_path, point(spread=0.3))
    (v,) = budgets.judge(point(ips=960.0, spread=0.3), ref(tmp_path), groups=("throughput",))
    assert v.outcome == "inconclusive" and "detects" in v.detail and "processes per side would decide" in v.detail


def test_fewer_than_five_processes_a_side_never_decide_wall_time(tmp_path):
    # windows of one process are not independent samples: the process is (docs/gate.md)
    budget_files.update(tmp_path, point(images_per_s_process_medians=windows(1000.0, n=4)))
    few = point(ips=500.0, images_per_s_process_medians=windows(500.0, n=4))
    (v,) = budgets.judge(few, ref(tmp_path), groups=("throughput",))
    assert v.outcome == "inconclusive" and "too few processes to decide at 99% (5 a side suffice" in v.detail
    assert budgets.MIN_PROCESSES == 5


def test_process_medians_of_points_recorded_with_pooled_windows_only():
    from vitcore.spec.points import process_medians

    old = {"images_per_s": 2.0, "images_per_s_windows": [1, 2, 3, 10, 20, 30], "repeats": 3, "processes": 2}
    assert process_medians(old) == [2, 20]
    assert process_medians(old | {"processes": 1}) == [2.0]  # windows do not split into processes


def test_error_or_oom_point_against_an_ok_budget_is_a_regression(book):
    for status in ("oom", "error"):
        (v,) = budgets.compare(point(status=status), ref(book))
        assert v.group == "status" and v.metric == f"status {status}"


def test_failed_variant_or_injected_points_are_not_budgets(tmp_path):
    with pytest.raises(VitcoreError, match="status oom cannot be a budget"):
        budget_files.update(tmp_path, point(status="oom"))
    with pytest.raises(VitcoreError, match="ablation variant 'compile=True' is not a budget"):
        budget_files.update(tmp_path, point(variant="compile=True"))
    with pytest.raises(VitcoreError, match=r"injected regression \(device\+1ms\) is not a budget"):
        budget_files.update(tmp_path, point(injected="device+1ms"))


@pytest.mark.parametrize("groups,expected", [(("memory",), ["steady allocated GiB"]), (("throughput",), ["images/s"]),
                                             (("device_time",), ["device ms/step"])])
def test_compare_only_the_groups_asked(book, groups, expected):
    got = budgets.compare(point(ips=800.0, alloc=4.4, device_ms=60.0), ref(book), groups=groups)
    assert [v.metric for v in got] == expected


def test_other_device_is_no_budget(book):
    with pytest.raises(budget_files.NoBudget, match="no budget file for device 'nvidia-a100"):
        budget_files.load(book, point(gpu_name="NVIDIA A100-SXM4-80GB"))


def test_entry_holds_measurements_and_provenance_never_a_tolerance(book):
    entry = ref(book)
    assert entry["source"]["git_sha"] == "abc" and entry["processes"] == 6
    assert entry["images_per_s_process_medians"] == windows(1000.0, spread=0.005)
    assert entry["device_ms_per_step"] == 50.0 and entry["launches_per_step"] == 1285.0
    assert entry["steady_mem_allocated_gib"] == 4.0 and entry["observed"]["launches_per_step"] == [1285.0]
    assert not any("allowed" in k or "tol" in k for k in entry)
    assert budgets.tolerances() == {"throughput": 0.05, "device_time": 0.02, "launches": 0.0, "memory": 0.005}


def test_fail_on_overrides_only_what_it_names(book):
    assert outcomes(point(device_ms=51.5), ref(book))["device_time"] == "regressed"
    tol = budgets.parse_fail_on("device_time:5%")
    assert outcomes(point(device_ms=51.5), ref(book), tol=tol)["device_time"] == "pass"
    assert outcomes(point(alloc=4.03), ref(book), tol=tol)["memory"] == "regressed"  # +0.75%: still 0.5%
    assert outcomes(point(alloc=4.03), ref(book), tol=tol | budgets.parse_fail_on("memory:1%"))["memory"] == "pass"


def test_entry_of_an_older_version_without_device_time_is_a_skip(tmp_path):
    budget_files.update(tmp_path, point(device_ms_per_step=None, launches_per_step=None))
    with pytest.raises(budget_files.NoBudget, match=r"the budget entry of nvidia-h100-80gb-hbm3-x1-torch2\.11\.0-"
                                                    r"cuda13\.0 has no device_time \(recorded by an older version\); "
                                                    r"record this device's budgets: pytest -m gpu -k performance"):
        budget_files.check(tmp_path, point(), "device_time")


@pytest.mark.parametrize("bad", [0.0, float("nan"), -1.0])
def test_zero_or_nan_reference_value_is_an_error(bad):
    with pytest.raises(VitcoreError, match="must be a positive number"):
        budgets.judge(point(), point(device_ms=bad))


def test_budget_table_gives_each_point_the_tests_verdicts(tmp_path):
    from vitcore.reporting import report

    budget_files.update(tmp_path, point(batch_size=32))
    rows = [point(batch_size=32, ips=850.0, test="performance"), point(batch_size=8, test="performance")]
    table = report.budget_table(rows, tmp_path).splitlines()[2:]
    assert "| gemini | bf16 | 8 |" in table[0] and table[0].count("| no budget: no budget entry 'gemini|bf16|") == 4
    assert table[1] == ("| gemini | bf16 | 32 | 850 (1%) | 50.00 | 1285 | regressed (-15.0%) | pass (+0.0%) "
                        "| pass (+0.0%) | pass (+0.0%) |")


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
    improved_only = budgets.compare_runs([point(device_ms=45.0)], [point()])  # device time is one-sided
    assert not improved_only.failed() and improved_only.failed(strict=True)
    stale = budgets.compare_runs([point(launches=1284.0)], [point()])  # launches are two-sided
    assert stale.improvements == [] and stale.failed()
    assert stale.regressions == ["gemini bf16 bs=128: launches/step 1284 vs budget 1285 (-0.1%) improved; the budget "
                                 "is stale (re-record it: --update-budgets)"]


def test_current_error_against_ok_baseline_fails_the_gate():
    gate = budgets.compare_runs([point(status="oom", images_per_s=None)], [point()])
    assert gate.failed() and "status oom" in gate.regressions[0]
    assert math.isnan(gate.verdicts[budgets.points.key(point())][0].measured)


def test_budget_file_round_trip_is_json(book):
    data = json.loads(budget_files.budget_path(book, point()).read_text())
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
    budget_files.update(tmp_path, point(copy_ms_per_step=3.0))
    assert outcomes(point(device_ms=50.5, copy_ms_per_step=9.0), ref(tmp_path))["device_time"] == "pass"


def test_inconclusive_report_cell_names_what_it_can_detect(tmp_path):
    budget_files.update(tmp_path, point(spread=0.3))
    (v,) = budgets.judge(point(ips=960.0, spread=0.3), ref(tmp_path), groups=("throughput",))
    assert v.short().startswith("throughput inconclusive (detects ") and v.short().endswith("%)")
    few = point(images_per_s_process_medians=[1000.0])
    (v,) = budgets.judge(few, ref(tmp_path), groups=("throughput",))
    assert v.short() == "throughput inconclusive (1 vs 6 processes: too few)"


def test_baseline_memory_of_zero_is_refused_up_front_and_ungated_fields_are_not_checked():
    with pytest.raises(VitcoreError, match="has steady_mem_allocated_gib = 0.0"):
        budgets.check_baseline([point(alloc=0.0)], source="b.jsonl", device=DEVICE)
    # the peak used to be memory's fallback; neither it nor reserved memory is gated now
    budgets.check_baseline([point(peak=0.0, reserved=0.0, peak_reserved=float("nan"))], source="b.jsonl",
                           device=DEVICE)
