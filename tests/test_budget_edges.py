"""The one regression rule at its edges: every gated metric in both directions just inside and just
outside its tolerance, the gate's outcome lines, and what mutation testing found unpinned (issue 18;
docs/mutation.md). The rule's cases by example are in test_budgets.py."""

import json
import math

import pytest

from tests.test_budgets import DEVICE, point
from vitcore import VitcoreError, budget_files, budgets


@pytest.fixture
def book(tmp_path):
    budget_files.update(tmp_path, point())
    return tmp_path


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
    entry = budget_files.make_entry(point(steady_mem_allocated_gib=3.5, copy_ms_per_step=1.0))
    assert sorted(entry) == sorted([
        "copy_ms_per_step", "device_ms_per_step", "device_sm_clock_mhz", "host_sm_clock_mhz_windows", "images_per_s",
        "images_per_s_process_medians", "images_per_s_windows", "launches_per_step", "peak_mem_allocated_gib", "peak_mem_reserved_gib",
        "steady_mem_allocated_gib", "steady_mem_reserved_gib", "spread", "processes", "plugin_options", "source"])
    assert (entry["steady_mem_allocated_gib"], entry["steady_mem_reserved_gib"], entry["processes"]) == (3.5, None, 6)
    assert entry["source"]["git_sha"] == "abc" and entry["source"]["repeats"] == 5
    assert budget_files.make_entry(point(processes=None))["processes"] == 1


def test_check_returns_the_entry_and_one_groups_verdicts(book):
    entry, verdicts = budget_files.check(book, point(alloc=4.2), "memory")
    assert entry["peak_mem_allocated_gib"] == 4.0
    assert [(v.metric, v.outcome) for v in verdicts] == [("peak_mem_allocated_gib", "regressed"),
                                                         ("peak_mem_reserved_gib", "pass")]
    with pytest.raises(budget_files.NoBudget, match=r"no budget entry 'gemini\|bf16\|fast\|vit-base\|ws1\|bs8'"):
        budget_files.check(book, point(batch_size=8), "memory")
    _, (v,) = budget_files.check(book, point(status="oom"), "memory")
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
    with pytest.raises(budget_files.NoBudget, match=msg.format(tmp_path, "none")):
        budget_files.load(tmp_path, point(gpu_name="NVIDIA A100-SXM4-80GB"))
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "c.txt").write_text("{}")
    with pytest.raises(budget_files.NoBudget, match=msg.format(tmp_path, "a, b")):
        budget_files.load(tmp_path, point(gpu_name="NVIDIA A100-SXM4-80GB"))


def test_missing_entry_message_is_exact(book):
    with pytest.raises(budget_files.NoBudget, match=r"^no budget entry 'gemini\|bf16\|fast\|vit-base\|ws1\|bs8' for this "
                                               r"device; run with --update-budgets to record one$"):
        budget_files.lookup(budget_files.load(book, point()), point(batch_size=8))


def test_update_adds_entries_to_an_existing_file(tmp_path):
    path, entry = budget_files.update(tmp_path, point())
    assert path == tmp_path / f"{DEVICE}.json" and entry == budget_files.make_entry(point())
    budget_files.update(tmp_path, point(batch_size=32, device_ms=40.0))
    budget_files.update(tmp_path, point(device_ms=45.0))  # re-recording replaces the entry
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
    _, entry = budget_files.update(tmp_path, point(spread=0.037))
    assert entry["spread"] == 0.037
    assert budget_files.lookup(budget_files.load(tmp_path, point()), point())["spread"] == 0.037


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

    budget_files.update(tmp_path, point(date=entry_date))
    assert gating.has_budget(tmp_path, point(date=point_date)) is kept


def test_a_point_run_with_other_plugin_options_fails_closed_against_a_budget_or_baseline():
    """The fast profile sets plugin options (overlap_communication=False): a budget recorded with the
    entry's own values (an entry without the field: {}) cannot judge it, whatever its numbers."""
    old = budget_files.make_entry(point())
    assert old["plugin_options"] == {}
    del old["plugin_options"]  # recorded before entries carried them
    cur = point(plugin_options={"overlap_communication": False})
    (v,) = budgets.judge(cur, old)
    assert (v.group, v.outcome, v.short()) == ("settings", "regressed", "plugin options differ")
    assert str(v) == ("gemini bf16 bs=128: plugin options differ from the recorded ones: overlap_communication=False "
                      "(recorded with (entry default)); these numbers do not compare: re-record the budget "
                      "(--update-budgets) or the baseline with the same options")
    gate = budgets.compare_runs([cur], [point()])
    assert gate.failed() and "overlap_communication=False (recorded with (entry default))" in gate.regressions[0]
    assert budgets.judge(cur, budget_files.make_entry(cur))[0].group != "settings"  # the same options: judged
