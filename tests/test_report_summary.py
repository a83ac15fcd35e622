"""The report a reader opens, from synthetic points (no bench run): the summary's fastest and
leanest plugin per batch size, the CPU banner and noisy-point flags, the charts' layout, the run
parameters. Reports from real bench runs are in test_report.py."""

from vitcore.reporting import analysis, report
from vitcore.spec.points import key as point_key


def _synthetic(plugin, images_per_s, *, bs=32, spread=0.02, gpu="NVIDIA H100 80GB HBM3", mem=None, family=None,
               status="ok"):
    """A finished point as the bench records it (only the fields the summary and charts read)."""
    windows = [images_per_s * (1 - spread / 2), images_per_s, images_per_s * (1 + spread / 2)]
    return {"plugin": plugin, "family": family or plugin, "precision": "bf16", "profile": "fast", "variant": "",
            "model": "vit-base", "world_size": 1, "batch_size": bs, "status": status, "test": "performance",
            "images_per_s": images_per_s if status == "ok" else None,
            "images_per_s_windows": windows if status == "ok" else None,
            "spread": spread if status == "ok" else None, "gpu_name": gpu, "gpu_count": 1 if gpu else 0,
            "device": gpu or "cpu (x86_64, 2 cores)", "peak_mem_allocated_gib": mem,
            "peak_mem_reserved_gib": mem and mem * 1.2, "mfu": 0.1 if gpu else None,
            "steps": 10, "repeats": 5, "warmup": 3, "min_window_s": 0.3, "command": "vitcore bench --profile fast",
            "error": "CUDA out of memory" if status != "ok" else None}


def _gpu_run():
    return [_synthetic("reference_compiled", 1000.0, family="reference", mem=5.0),
            _synthetic("torch_ddp", 800.0, mem=6.0), _synthetic("torch_fsdp", 950.0, mem=4.0),
            _synthetic("gemini", 300.0, mem=2.5, family="gemini"),
            _synthetic("torch_ddp", 1500.0, bs=128, mem=12.0), _synthetic("gemini", 600.0, bs=128, mem=5.0),
            _synthetic("torch_fsdp", 0.0, bs=128, status="oom")]


def test_summary_names_the_fastest_and_the_leanest_plugin_per_batch_size():
    points = analysis.enrich(_gpu_run())
    verdicts = {point_key(points[1]): "throughput regressed (-9.0%); memory pass (+0.0%)",
                point_key(points[2]): "throughput pass (+1.0%); memory pass (+0.0%)"}
    s = analysis.summary(points, verdicts, point_key)
    by_bs = {r["batch_size"]: r for r in s["rows"]}
    # the reference is faster still, but it is no plugin
    assert by_bs[32]["fastest"]["plugin"] == "torch_fsdp" and by_bs[32]["leanest"]["plugin"] == "gemini"
    assert by_bs[128]["fastest"]["plugin"] == "torch_ddp" and by_bs[128]["leanest"]["plugin"] == "gemini"
    assert s["counts"] == {"pass": 1, "regressed": 2, "improved": 0, "inconclusive": 0, "no budget": 4}
    assert s["failures"] == ["torch_ddp bf16 fast bs32: throughput regressed (-9.0%)",
                             "torch_fsdp bf16 fast bs128: oom: CUDA out of memory"]
    page = report.html_report(points, verdicts=verdicts)
    head = page.split("<section id='summary'>")[1].split("</section>")[0]
    assert "<b>torch_fsdp</b> bf16 fast: 950 img/s, 4.00 GiB, 0.95x the reference_compiled, MFU 10.0%" in head
    assert "1 pass, 2 regressed, 0 improved, 0 inconclusive, 4 no budget" in head
    assert page.index("<section id='summary'>") < page.index("<h2>Charts</h2>") < page.index("id=\"points\"")


def test_cpu_banner_on_a_cpu_run_only_and_labels_that_say_cpu():
    gpu = analysis.enrich(_gpu_run())
    cpu = [p | {"gpu_name": None, "gpu_count": 0, "device": "cpu (x86_64, 2 cores)", "peak_mem_allocated_gib": None,
                "peak_mem_reserved_gib": None,
                "mfu": None} for p in gpu]
    assert analysis.is_cpu_run(cpu) and not analysis.is_cpu_run(gpu)
    assert "id='cpu-banner'" in report.html_report(cpu) and "say nothing about" in report.html_report(cpu)
    assert "id='cpu-banner'" not in report.html_report(gpu)
    from vitcore.reporting import charts

    assert charts.axis_labels(cpu, "images_per_s") == ("batch size per process (CPU run)", "images/s per process (CPU)")
    assert charts.axis_labels(gpu, "images_per_s") == ("batch size per GPU", "images/s per GPU")
    # memory charts only where memory was measured: none on the CPU run, two on the GPU run
    titles = [c.title for c in charts.report_charts(cpu, None, None)]
    assert titles == ["Throughput"]
    assert [c.title for c in charts.report_charts(gpu, None, None)] == [
        "Throughput", "Peak memory, allocated", "Peak memory, reserved"]


def test_charts_tick_at_the_measured_sizes_with_the_legend_outside_and_the_reference_dashed_black():
    from vitcore.reporting import charts

    chart = charts.chart_vs_batch(analysis.enrich(_gpu_run()), "images_per_s", "Throughput")
    assert chart.legend_outside and chart.xlabels == ["batch size per GPU"] and chart.ylabels == ["images/s per GPU"]
    lx0, _, _, _ = chart.legend
    assert lx0 >= chart.axes[0][2]  # right of the plotting area
    ref = charts._style([_synthetic("reference_compiled", 1.0, family="reference")], 0, [])
    assert (ref["color"], ref["ls"]) == ("black", "--")
    fams = ["gemini", "torch_ddp"]
    a, b = (charts._style([_synthetic(n, 1.0)], i, fams) for i, n in enumerate(fams))
    assert a["marker"] != b["marker"] and a["color"] != b["color"]


def test_cpu_run_flags_noisy_points_and_keeps_them_out_of_the_derived_tables():
    limit = analysis.CPU_SPREAD_LIMIT
    quiet = _synthetic("torch_ddp", 100.0, gpu=None, spread=limit / 2)
    noisy = _synthetic("hybrid_parallel", 900.0, gpu=None, spread=limit * 20)
    twin = _synthetic("bare_torch_ddp", 120.0, gpu=None, spread=limit * 3, family="reference") | {
        "mirrors": "torch_ddp", "fused_optimizer": analysis.option(quiet, "fused_optimizer"), "profile": "reference"}
    points = analysis.enrich([quiet, noisy, twin])
    kept, flagged = analysis.split_noisy(points)
    assert [p["plugin"] for p in flagged] == ["hybrid_parallel", "bare_torch_ddp"]
    # the noisy point is the faster one; the summary names only the quiet one
    assert analysis.summary(points, {}, point_key)["rows"][0]["fastest"]["plugin"] == "torch_ddp"
    assert analysis.harness_rows(points) and not analysis.harness_rows(kept)  # a noisy twin: no overhead figure
    page = report.html_report(points)
    assert f"spread at or over {limit:.0%}" in page
    noisy_list = page.split("<ul id='noisy'>")[1].split("</ul>")[0]
    assert [li.split(":")[0] for li in noisy_list.replace("</li>", "").split("<li>")[1:]] == [
        "hybrid_parallel bf16 fast bs32", "bare_torch_ddp bf16 reference bs32"]
    assert "<h2>Harness overhead over a bare hand-written loop</h2>" not in page
    assert "harness overhead torch_ddp" not in page  # nor its target line
    assert "<h2>Harness overhead over a bare hand-written loop</h2>" in report.html_report(
        [p | {"gpu_name": "NVIDIA H100 80GB HBM3"} for p in points])  # on a GPU nothing is left out
    assert page.count("<tr class='point noisy'>") == 2 and "(too noisy)" in page


def test_environment_section_states_the_run_parameters_and_the_command_once():
    page = report.html_report(analysis.enrich(_gpu_run()))
    env = page.split("<table id='environment'>")[1].split("</table>")[0]
    for label, value in (("optimizer steps per window", "10"), ("timed windows per process", "5"),
                         ("warm-up steps", "3"), ("minimum window (s)", "0.3"), ("profile", "fast"),
                         ("command line", "vitcore bench --profile fast")):
        assert f"<th>{label}</th><td>{value}</td>" in env
    assert env.count("NVIDIA H100 80GB HBM3") == 1  # the device once (gpu_name is no second row)
    head = page.split("<table id=\"points\">")[1].split("</thead>")[0]
    assert head.startswith("<thead><tr><th class='verdict'>verdict</th>")
    assert "<th>batch size</th>" in head and "<th>images/s</th>" in head and "batch_size" not in head


def test_cpu_summary_gives_no_ratio_against_a_noisy_reference():
    limit = analysis.CPU_SPREAD_LIMIT
    plugin = _synthetic("torch_ddp", 100.0, gpu=None, spread=limit / 2)
    points = analysis.enrich([plugin, _synthetic("reference_eager", 50.0, gpu=None, spread=limit * 4,
                                                 family="reference") | {"profile": "reference"}])
    assert points[0]["ratio_to_reference"] == 2.0  # the points table keeps the raw ratio
    fastest = analysis.summary(points, {}, point_key)["rows"][0]["fastest"]
    assert fastest["plugin"] == "torch_ddp" and fastest.get("ratio_to_reference") is None
    assert "no quiet reference to compare with" in report.html_report(points)
    quiet_ref = analysis.enrich([plugin, _synthetic("reference_eager", 50.0, gpu=None, spread=limit / 2,
                                                    family="reference") | {"profile": "reference"}])
    assert analysis.summary(quiet_ref, {}, point_key)["rows"][0]["fastest"]["ratio_to_reference"] == 2.0
