import pytest

from vitcore import memory, report
from vitcore.model import PRESETS


def test_param_count_matches_the_model():
    from vitcore.model import build_model

    for name in PRESETS:
        model, _ = build_model(PRESETS[name], labels=["a", "b", "c"], weights="random")
        assert memory.param_count(PRESETS[name]) == sum(p.numel() for p in model.parameters())


def _committed_gpu_points():
    from pathlib import Path

    files = [f for pattern in ("reports/**/points.jsonl", "reports/**/gpu-results.json*")
             for f in Path().glob(pattern)]
    return [p for f in files for p in report.perf_points(report.load(f))
            if p["status"] == "ok" and p.get("peak_mem_allocated_gib") and p.get("family") != "reference"]


def test_bound_holds_for_every_committed_gpu_measurement():
    points = _committed_gpu_points()
    assert len(points) > 50
    for p in points:
        bound = memory.for_point(p)
        assert 0 < bound <= p["peak_mem_allocated_gib"], (p["plugin"], p["precision"], p["batch_size"], bound)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_sharding_lowers_the_bound_as_gpus_grow(stage):
    kw = dict(family="low_level_zero", precision="bf16", preset=PRESETS["vit-base"], batch_size=32, zero_stage=stage)
    bounds = [memory.lower_bound_gib(dp_size=n, **kw) for n in (1, 2, 4, 8)]
    assert bounds == sorted(bounds, reverse=True) and bounds[0] > bounds[-1]


def test_checkpointing_lowers_activations():
    kw = dict(family="torch_ddp", precision="fp32", preset=PRESETS["vit-base"], batch_size=128)
    assert memory.lower_bound_gib(grad_checkpoint=True, **kw) < memory.lower_bound_gib(**kw) / 3
