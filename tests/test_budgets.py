"""The budget comparison on CPU: a 10% slowdown or 5% memory growth fails, noise passes."""

import json

import pytest

from vitcore import VitcoreError, budgets


def point(ips=1000.0, alloc=4.0, reserved=5.0, spread=0.01, **kw):
    return {"plugin": "gemini", "precision": "bf16", "profile": "fast", "model": "vit-base",
            "world_size": 1, "batch_size": 128, "status": "ok", "images_per_s": ips, "spread": spread,
            "peak_mem_allocated_gib": alloc, "peak_mem_reserved_gib": reserved, "repeats": 5,
            "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "torch": "2.11.0+cu130", "cuda": "13.0",
            "date": "2026-11-24", "git_sha": "abc", "dataset": "d", "weights": "w"} | kw


@pytest.fixture
def book(tmp_path):
    budgets.update(tmp_path, point())
    return tmp_path


def ref(folder):
    return budgets.lookup(budgets.load(folder, point()), point())


def test_ten_percent_slower_fails(book):
    v = budgets.compare(point(ips=900.0), ref(book))
    assert [x.metric for x in v] == ["images/s"]
    assert "gemini bf16 bs=128: images/s 900 vs budget 1000 (-10.0%)" == str(v[0])


def test_five_percent_more_memory_fails(book):
    v = budgets.compare(point(alloc=4.2), ref(book))
    assert [x.metric for x in v] == ["peak_mem_allocated_gib"] and v[0].delta == pytest.approx(0.05)


def test_steady_state_memory_is_compared_where_both_sides_have_it(tmp_path):
    # The first steps' peak varies between runs (timing.timed); the steady-state one decides.
    budgets.update(tmp_path, point(alloc=4.0, steady_mem_allocated_gib=3.5, steady_mem_reserved_gib=4.5))
    book = budgets.lookup(budgets.load(tmp_path, point()), point())
    assert budgets.compare(point(alloc=4.3, steady_mem_allocated_gib=3.5, steady_mem_reserved_gib=4.5), book) == []
    (v,) = budgets.compare(point(alloc=4.0, steady_mem_allocated_gib=3.7, steady_mem_reserved_gib=4.5), book)
    assert v.metric == "steady_mem_allocated_gib" and v.delta == pytest.approx(3.7 / 3.5 - 1)
    # a point measured before steady-state peaks existed is compared on the overall peak
    (v,) = budgets.compare(point(alloc=4.3), book)
    assert v.metric == "peak_mem_allocated_gib"


@pytest.mark.parametrize("ips,alloc", [(1000.0, 4.0), (960.0, 4.08), (1200.0, 3.0)])
def test_noise_and_improvements_pass(book, ips, alloc):
    assert budgets.compare(point(ips=ips, alloc=alloc), ref(book)) == []


def test_budget_demanding_20_percent_more_fails_naming_everything(book):
    path = budgets.budget_path(book, point())
    data = json.loads(path.read_text())
    for e in data["entries"].values():
        e["images_per_s"] *= 1.2
    path.write_text(json.dumps(data))
    (v,) = budgets.compare(point(), ref(book))
    assert "gemini bf16 bs=128: images/s 1000 vs budget 1200" in str(v)


def test_noisy_throughput_is_refused_as_baseline_but_its_memory_is_kept(tmp_path):
    _, entry = budgets.update(tmp_path, point(spread=0.09))
    assert entry["images_per_s"] is None and entry["observed_images_per_s"] == 1000.0
    assert "spread 9.0% over 5 repeats exceeds 3.5%; too noisy" in entry["throughput_refused"]
    book = ref(tmp_path)
    with pytest.raises(budgets.NoBudget, match="no throughput baseline on this device: spread 9.0%"):
        budgets.require_throughput(book, point())
    # memory is still gated, throughput is not compared
    assert budgets.compare(point(ips=500.0), book) == []
    (v,) = budgets.compare(point(alloc=4.2), book)
    assert v.metric == "peak_mem_allocated_gib"


def test_failed_or_variant_points_are_not_budgets(tmp_path):
    with pytest.raises(VitcoreError, match="status oom cannot be a budget"):
        budgets.update(tmp_path, point(status="oom"))
    with pytest.raises(VitcoreError, match="ablation variant 'compile=True' is not a budget"):
        budgets.update(tmp_path, point(variant="compile=True"))


@pytest.mark.parametrize("groups,expected", [(("memory",), ["peak_mem_allocated_gib"]), (("throughput",), ["images/s"])])
def test_compare_only_the_metric_asked(book, groups, expected):
    assert [v.metric for v in budgets.compare(point(ips=800.0, alloc=4.4), ref(book), groups=groups)] == expected


def test_other_device_is_no_budget(book):
    with pytest.raises(budgets.NoBudget, match="no budget file for device 'nvidia-a100"):
        budgets.load(book, point(gpu_name="NVIDIA A100-SXM4-80GB"))


def test_budget_records_its_source(book):
    entry = ref(book)
    assert entry["source"]["git_sha"] == "abc" and entry["spread"] == 0.01
    # the entry holds measurements and provenance, never its own copy of the tolerance
    assert not any("allowed" in k or "tol" in k for k in entry)
    assert budgets.tolerances() == {"throughput": 0.07, "memory": 0.03}


def test_one_default_tolerance_and_fail_on_overrides_only_what_it_names(book):
    assert budgets.compare(point(ips=940.0), ref(book)) == []  # -6%: inside the default 7%
    (v,) = budgets.compare(point(ips=940.0), ref(book), tol=budgets.parse_fail_on("throughput:5%"))
    assert v.metric == "images/s"
    # memory keeps its default 3% when --fail-on names only throughput
    (v,) = budgets.compare(point(alloc=4.2), ref(book), tol=budgets.parse_fail_on("throughput:5%"))
    assert v.metric == "peak_mem_allocated_gib"


def test_entry_recorded_noisier_than_todays_limit_is_a_skip_not_a_verdict(book):
    path = budgets.budget_path(book, point())
    data = json.loads(path.read_text())
    (entry,) = data["entries"].values()
    entry["spread"] = budgets.MAX_BASELINE_SPREAD + 0.01
    path.write_text(json.dumps(data))
    with pytest.raises(budgets.NoBudget, match=r"throughput recorded with spread 4\.5%, above the 3\.5%"):
        budgets.require_throughput(ref(book), point())


def test_budget_table_gives_each_point_the_tests_verdicts(tmp_path):
    from vitcore import report

    budgets.update(tmp_path, point(batch_size=32))
    budgets.update(tmp_path, point(spread=0.2))  # bs128: memory budget only
    rows = [point(batch_size=32, ips=850.0, test="performance"), point(alloc=4.5, test="performance"),
            point(batch_size=8, test="performance")]
    table = report.budget_table(rows, tmp_path).splitlines()[2:]
    assert "| gemini | bf16 | 8 |" in table[0] and "skip: no budget entry" in table[0]
    assert "| 1000 | FAIL -15.0% |" in table[1] and table[1].endswith("| pass |")
    assert "skip (no baseline: spread 20% when recorded)" in table[2] and "FAIL peak_mem_allocated_gib +12.5%" in table[2]
