from pathlib import Path

import pytest

from vitcore.inputs.model import PRESETS, build_model
from vitcore.reporting import analysis, memory
from vitcore.spec import plugins
from vitcore.store import results


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


# --- the bound against state sizes worked out by hand (issue 18) -------------------------------------------
# vit-tiny: h 64, MLP 128, 2 layers, 8 px patches of a 32 px image: 16 patches + [CLS] = 17 tokens.
# embeddings 3·8²·64 + 64 + 64 + 17·64 = 13,504; a layer 4·64² + 4·64 + 2·64·128 + 128 + 64 + 4·64 = 33,472;
# final norm and head 2·64 + 64·3 + 3 = 323: 13,504 + 2·33,472 + 323 = 80,771 parameters.
_TINY_P = 80_771
_TINY_ACTS_16 = 2 * 30 * 17 * 64  # bytes per image at 16 bits without checkpointing: 65,280
_TINY_CKPT_16 = 2 * 2 * 17 * 64 + 30 * 17 * 64  # each layer's input plus one layer's full set: 36,992


def _tiny(**kw):
    return memory.lower_bound_gib(preset=PRESETS["vit-tiny"], **kw) * 2**30


def test_param_counts_are_pinned():
    assert memory.param_count(PRESETS["vit-tiny"]) == _TINY_P
    assert memory.param_count(PRESETS["vit-base"]) == _P
    assert memory.param_count(PRESETS["vit-tiny"], num_labels=10) == _TINY_P + 7 * 64 + 7


@pytest.mark.parametrize("precision,layout,per_param,acts", [
    # fp32: params 4 + grads 4 + Adam m 4 + v 4 (no master copy), activations doubled
    ("fp32", "mixed", 4 + 4 + 4 + 4, 2 * _TINY_ACTS_16),
    ("fp32", "amp", 4 + 4 + 4 + 4, 2 * _TINY_ACTS_16),
    # mixed: 16-bit params 2 + grads 2 + fp32 master 4 + m 4 + v 4
    ("bf16", "mixed", 2 + 2 + 4 + 4 + 4, _TINY_ACTS_16),
    ("fp16", "mixed", 2 + 2 + 4 + 4 + 4, _TINY_ACTS_16),
    # AMP: fp32 params 4 + grads 4 + m 4 + v 4, 16-bit activations
    ("fp16", "amp", 4 + 4 + 4 + 4, _TINY_ACTS_16),
])
def test_bound_is_the_hand_computed_state_size(precision, layout, per_param, acts):
    for bs in (1, 7):
        assert _tiny(precision=precision, state_layout=layout, batch_size=bs) == pytest.approx(
            _TINY_P * per_param + bs * acts, rel=1e-12)


@pytest.mark.parametrize("stage,per_param", [
    (0, 2 + 2 + 12), (1, 2 + 2 + 12 / 4), (2, 2 + 2 / 4 + 12 / 4), (3, 2 / 4 + 2 / 4 + 12 / 4)])
def test_zero_stages_shard_over_four_ranks_by_hand(stage, per_param):
    got = _tiny(precision="bf16", batch_size=2, dp_size=4, zero_stage=stage)
    assert got == pytest.approx(_TINY_P * per_param + 2 * _TINY_ACTS_16, rel=1e-12)
    # one rank shards nothing
    assert _tiny(precision="bf16", batch_size=2, dp_size=1, zero_stage=stage) == pytest.approx(
        _TINY_P * 16 + 2 * _TINY_ACTS_16, rel=1e-12)
    assert _tiny(precision="bf16", batch_size=2, dp_size=0, zero_stage=stage) == pytest.approx(
        _TINY_P * 16 + 2 * _TINY_ACTS_16, rel=1e-12)


def test_offload_grads_in_chunks_and_checkpointing_by_hand():
    kw = dict(precision="bf16", batch_size=3)
    assert _tiny(offload_optimizer=True, **kw) == pytest.approx(_TINY_P * 4 + 3 * _TINY_ACTS_16, rel=1e-12)
    assert _tiny(grads_in_param_chunks=True, **kw) == pytest.approx(_TINY_P * 14 + 3 * _TINY_ACTS_16, rel=1e-12)
    # fp32 keeps its own gradients even where 16-bit ones live in the parameter chunks
    assert _tiny(precision="fp32", batch_size=3, grads_in_param_chunks=True) == pytest.approx(
        _TINY_P * 16 + 3 * 2 * _TINY_ACTS_16, rel=1e-12)
    assert _tiny(grad_checkpoint=True, **kw) == pytest.approx(_TINY_P * 16 + 3 * _TINY_CKPT_16, rel=1e-12)
    assert _tiny(precision="fp32", batch_size=3, grad_checkpoint=True) == pytest.approx(
        _TINY_P * 16 + 3 * 2 * _TINY_CKPT_16, rel=1e-12)


def test_for_point_reads_dp_size_and_checkpointing():
    p = {"plugin": "low_level_zero_s2", "precision": "bf16", "model": "vit-tiny", "batch_size": 4}
    assert memory.for_point(p) * 2**30 == pytest.approx(_TINY_P * 16 + 4 * _TINY_ACTS_16, rel=1e-12)
    assert memory.for_point(p | {"dp_size": 2, "grad_checkpoint": True}) * 2**30 == pytest.approx(
        _TINY_P * (2 + 1 + 6) + 4 * _TINY_CKPT_16, rel=1e-12)
    assert memory.for_point(p | {"model": "nope"}) is None
    assert memory.for_point({"plugin": "torch_ddp"}) is None


def test_mutation_survivors_of_the_bound(monkeypatch):  # docs/mutation.md
    # defaults: one rank, no sharding
    assert _tiny(precision="bf16", batch_size=1, zero_stage=3) == pytest.approx(_TINY_P * 16 + _TINY_ACTS_16)
    assert _tiny(precision="bf16", batch_size=1, dp_size=4) == pytest.approx(_TINY_P * 16 + _TINY_ACTS_16)
    # fp32 is fp32 in any layout: 4 + 4 + 8/4 under ZeRO-1 over 4 ranks (mixed would be 2 + 2 + 12/4)
    assert _tiny(precision="fp32", batch_size=1, dp_size=4, zero_stage=1) == pytest.approx(
        _TINY_P * 10 + 2 * _TINY_ACTS_16)
    # for_point passes the entry's state layout: AMP under ZeRO-1 keeps fp32 params and grads whole
    spec = plugins.PluginSpec(name="amp_zero1", family="x", description="", factory=lambda ctx: None,
                              precisions=("bf16",), state_layout="amp", zero_stage=1)
    monkeypatch.setitem(plugins.REGISTRY, spec.name, spec)
    got = memory.for_point({"plugin": "amp_zero1", "precision": "bf16", "model": "vit-tiny", "batch_size": 1,
                            "dp_size": 4})
    assert got * 2**30 == pytest.approx(_TINY_P * (4 + 4 + 8 / 4) + _TINY_ACTS_16)
