from pathlib import Path

import pytest

from vitcore import analysis, memory, plugins, results
from vitcore.model import PRESETS, build_model


def test_param_count_matches_the_model():
    for name in PRESETS:
        model, _ = build_model(PRESETS[name], labels=["a", "b", "c"], weights="random")
        assert memory.param_count(PRESETS[name]) == sum(p.numel() for p in model.parameters())


def _committed_gpu_points():
    files = [f for pattern in ("reports/**/points.jsonl", "reports/**/gpu-results.json*")
             for f in Path().glob(pattern)]
    return [p for f in files for p in analysis.perf_points(results.load(f))
            if p["status"] == "ok" and p.get("peak_mem_allocated_gib") and p.get("family") != "reference"]


def test_bound_holds_for_every_committed_gpu_measurement():
    points = _committed_gpu_points()
    assert len(points) > 50
    for p in points:
        bound = memory.for_point(p)
        assert 0 < bound <= p["peak_mem_allocated_gib"], (p["plugin"], p["precision"], p["batch_size"], bound)


# vit-base, batch 32 per rank, 2 data-parallel ranks, no checkpointing. Model-state bytes per
# parameter, worked out by hand from what each entry keeps (params + grads + fp32 master and Adam
# m, v), each divided by 2 where the entry shards it:
_P = 85_800_963  # vit-base parameters with 3 labels
_ACTS_16 = 12 * 30 * 197 * 768  # bytes per image at 16 bits: layers x 30·s·h; doubled in fp32
_BYTES_PER_PARAM = {
    ("torch_ddp", "fp32"): 4 + 4 + 8,
    ("torch_ddp_fp16", "fp16"): 4 + 4 + 8,  # AMP: fp32 params and grads
    ("low_level_zero_s1", "fp16"): 2 + 2 + 12 / 2, ("low_level_zero_s1", "bf16"): 2 + 2 + 12 / 2,
    ("low_level_zero_s2", "fp16"): 2 + 2 / 2 + 12 / 2, ("low_level_zero_s2", "bf16"): 2 + 2 / 2 + 12 / 2,
    ("gemini", "fp16"): 2 / 2 + 0 + 12 / 2, ("gemini", "bf16"): 2 / 2 + 0 + 12 / 2,  # grads in param chunks
    ("gemini_auto", "fp16"): 2 / 2, ("gemini_auto", "bf16"): 2 / 2,  # optimizer states may be on the CPU
    ("gemini_offload", "fp16"): 2 / 2, ("gemini_offload", "bf16"): 2 / 2,
    **{(h, prec): 16 for h in ("hybrid_parallel", "hybrid_parallel_tp2", "hybrid_parallel_pp2",
                               "hybrid_parallel_tp2pp2") for prec in ("fp32", "fp16", "bf16")},
    ("hybrid_parallel_tp2_zero1", "fp16"): 2 + 2 + 12, ("hybrid_parallel_tp2_zero1", "bf16"): 2 + 2 + 12,
    ("torch_fsdp", "fp32"): (4 + 4 + 8) / 2, ("torch_fsdp", "bf16"): (4 + 4 + 8) / 2,  # FSDP MixedPrecision: fp32 states
}


def test_bound_of_every_registry_entry_is_pinned():
    cases = {(s.name, prec) for s in plugins.REGISTRY.values() for prec in s.precisions}
    assert cases == set(_BYTES_PER_PARAM), "a new entry: add its hand-computed bytes per parameter here"
    for (name, prec), per_param in _BYTES_PER_PARAM.items():
        expected = (per_param * _P + 32 * _ACTS_16 * (2 if prec == "fp32" else 1)) / 2**30
        got = memory.for_point({"plugin": name, "precision": prec, "model": "vit-base", "batch_size": 32,
                                "dp_size": 2, "grad_checkpoint": False})
        assert got == pytest.approx(expected, rel=1e-12), (name, prec)
    assert memory.for_point({"plugin": "torch_ddp", "precision": "fp32", "model": "vit-base", "batch_size": 32,
                             "dp_size": 2}) == pytest.approx(4.524993941, rel=1e-9)  # the number before the move
    assert memory.for_point({"plugin": "reference_eager", "precision": "bf16", "model": "vit-base",
                             "batch_size": 32}) is None


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_sharding_lowers_the_bound_as_gpus_grow(stage):
    kw = dict(state_layout="mixed", precision="bf16", preset=PRESETS["vit-base"], batch_size=32, zero_stage=stage)
    bounds = [memory.lower_bound_gib(dp_size=n, **kw) for n in (1, 2, 4, 8)]
    assert bounds == sorted(bounds, reverse=True) and bounds[0] > bounds[-1]


def test_checkpointing_lowers_activations():
    kw = dict(precision="fp32", preset=PRESETS["vit-base"], batch_size=128)
    assert memory.lower_bound_gib(grad_checkpoint=True, **kw) < memory.lower_bound_gib(**kw) / 3
