"""The point schema is the one declaration every consumer reads: a metric registered in it shows
up in the CSV header, the HTML points table, the console table and the glossary with no other change."""

import pytest

from vitcore.gate import budgets
from vitcore.reporting import report
from vitcore.spec import points


def _point(**kw):
    return {"plugin": "torch_ddp", "family": "torch_ddp", "precision": "fp32", "profile": "fast", "model": "vit-tiny",
            "world_size": 1, "batch_size": 8, "variant": "", "status": "ok", "images_per_s": 100.0, "spread": 0.01,
            "peak_mem_allocated_gib": 1.0, "peak_mem_reserved_gib": 1.5, "repeats": 3, "steps": 3, "warmup": 1,
            "torch": "2.13.0", "cuda": None, "gpu_name": None, "gpu_count": 0} | kw


@pytest.fixture
def throwaway_metric():
    field = points.register(points.Field(name="joules_per_image", unit="J", description="energy per image (test)",
                                         header="energy J/img", fmt=".3f", table=True, console=9, short="J/img"))
    yield field
    points.unregister(field.name)


def test_a_registered_metric_reaches_csv_html_console_and_glossary(throwaway_metric, capsys):
    from vitcore.cli.commands import _print_points

    p = _point(joules_per_image=0.123456)
    assert report.to_csv([p]).splitlines()[0].split(",")[-1] == "joules_per_image"
    assert report.to_csv([p]).splitlines()[1].endswith(",0.123456")
    page = report.html_report([p])
    points_table = page.split("<table id=\"points\">")[1].split("</table>")[0]
    assert "<th>energy J/img</th>" in points_table and "<td>0.123</td>" in points_table
    glossary = page.split("<table id='glossary'>")[1].split("</table>")[0]
    assert "<th>energy J/img</th><td>J</td><td>energy per image (test)</td>" in glossary
    _print_points([p])
    head, row = capsys.readouterr().out.splitlines()
    assert head.split()[-2:] == ["J/img", "status"] and row.split()[-2:] == ["0.123", "ok"]


def test_registering_a_field_twice_is_an_error(throwaway_metric):
    with pytest.raises(ValueError, match="declared twice"):
        points.register(throwaway_metric)


def test_a_gated_metric_is_compared_by_the_one_rule():
    field = points.register(points.Field(name="launches", unit="1", description="kernel launches per step (test)",
                                         gate=points.Gate(group="launches", worse="higher", tolerance=0.0)))
    try:
        assert "launches" in points.gate_groups() and budgets.tolerances()["launches"] == 0.0
        (v,) = budgets.compare(_point(launches=101), _point(launches=100))
        assert v.metric == "launches" and str(v) == "torch_ddp fp32 bs=8: launches 101 vs budget 100 (+1.0%)"
        assert budgets.compare(_point(launches=100), _point(launches=100)) == []
        assert budgets.parse_fail_on("launches:1%") == {"launches": 0.01}
    finally:
        points.unregister(field.name)


def test_identity_is_one_function_with_defaults_for_older_points():
    old = {"plugin": "gemini", "precision": "bf16", "profile": "fast", "batch_size": "128"}
    assert points.key(old) == ("gemini", "bf16", "fast", "", "vit-base", 1, 128)
    assert points.key_text(old) == "gemini|bf16|fast|vit-base|ws1|bs128"
    assert points.key_text(old | {"variant": "compile=True"}) == "gemini|bf16|fast|vit-base|ws1|bs128|compile=True"
    # every identity field changes the key
    for name, other in [("plugin", "x"), ("precision", "fp16"), ("profile", "study"), ("variant", "v"),
                        ("model", "vit-tiny"), ("world_size", 2), ("batch_size", 64)]:
        assert points.key(old | {name: other}) != points.key(old), name


def test_device_is_part_of_every_baseline_match():
    h100 = _point(gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, torch="2.11.0+cu130", cuda="13.0")
    a100 = h100 | {"gpu_name": "NVIDIA A100-SXM4-80GB"}
    gate = budgets.compare_runs([h100], [a100 | {"images_per_s": 1000.0}])
    assert gate.regressions == [] and gate.new == [
        "torch_ddp fp32 fast  vit-tiny 1 8: not in the baseline (on nvidia-h100-80gb-hbm3-x1-torch2.11.0-cuda13.0)"]
    # the same device's baseline is compared: 30% more steady allocated memory regresses
    assert budgets.compare_runs([h100 | {"steady_mem_allocated_gib": 1.0}],
                                [h100 | {"steady_mem_allocated_gib": 0.7}]).regressions


def test_csv_header_is_the_schema():
    assert report.to_csv([]).strip().split(",") == [f.name for f in points.FIELDS if f.csv]
    assert points.csv_fields()[:9] == ["plugin", "family", "precision", "profile", "variant", "model",
                                       "world_size", "batch_size", "status"]
