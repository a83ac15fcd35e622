import pytest
import torch

from vitcore import ConfigError, compat, memory, plugins, reference
from vitcore.model import PRESETS
from vitcore.plugins import BuildContext, PluginSpec


def test_every_entry_constructs_or_skips_with_reason(spec, precision, cpu_process_group):
    """Each (entry, precision) builds its Booster plugin here, or is skipped saying why."""
    if spec.needs_cuda(precision) and not torch.cuda.is_available():
        pytest.skip(f"{spec.name} {precision} needs CUDA: {spec.cpu_reason}")
    if spec.min_world_size > 1:
        pytest.skip(f"{spec.name} needs {spec.min_world_size} processes; this test builds in one (tp2 and pp2 run in test_parity)")
    plugin = spec.build(BuildContext(precision=precision, tp_size=spec.tp_size, pp_size=spec.pp_size))
    assert type(plugin).__name__ == PLUGIN_CLASS[spec.family]
    if spec.family == "hybrid_parallel":
        assert (plugin.precision, plugin.tp_size, plugin.pp_size) == (precision, spec.tp_size, spec.pp_size)


# family -> the colossalai class its entries build
PLUGIN_CLASS = {"torch_ddp": "TorchDDPPlugin", "torch_ddp_fp16": "TorchDDPPlugin",
                "low_level_zero": "LowLevelZeroPlugin", "gemini": "GeminiPlugin",
                "hybrid_parallel": "HybridParallelPlugin", "torch_fsdp": "TorchFSDPPlugin"}

# name -> (precisions, cpu precisions, min world size, tp, pp, zero_stage, state_layout, grads in param
# chunks, optimizer offloaded, twin precision): typed in, so an entry that loses a precision or a fact fails
ENTRIES = {
    "torch_ddp": (("fp32",), ("fp32",), 1, 1, 1, 0, "mixed", False, False, "fp32"),
    "torch_ddp_fp16": (("fp16",), (), 1, 1, 1, 0, "amp", False, False, "fp16"),
    "low_level_zero_s1": (("fp16", "bf16"), (), 1, 1, 1, 1, "mixed", False, False, None),
    "low_level_zero_s2": (("fp16", "bf16"), (), 1, 1, 1, 2, "mixed", False, False, None),
    "gemini": (("fp16", "bf16"), (), 1, 1, 1, 3, "mixed", True, False, None),
    "gemini_auto": (("fp16", "bf16"), (), 1, 1, 1, 3, "mixed", True, True, None),
    "gemini_offload": (("fp16", "bf16"), (), 1, 1, 1, 3, "mixed", True, True, None),
    "hybrid_parallel": (("fp32", "fp16", "bf16"), ("fp32",), 1, 1, 1, 0, "mixed", False, False, None),
    "hybrid_parallel_tp2": (("fp32", "fp16", "bf16"), ("fp32",), 2, 2, 1, 0, "mixed", False, False, None),
    "hybrid_parallel_pp2": (("fp32", "fp16", "bf16"), ("fp32",), 2, 1, 2, 0, "mixed", False, False, None),
    "hybrid_parallel_tp2pp2": (("fp32", "fp16", "bf16"), ("fp32",), 4, 2, 2, 0, "mixed", False, False, None),
    "hybrid_parallel_tp2_zero1": (("fp16", "bf16"), (), 4, 2, 1, 0, "mixed", False, False, None),
    "torch_fsdp": (("fp32", "bf16"), (), 1, 1, 1, 3, "amp", False, False, None),
}


def test_registry_entries_and_their_facts_are_pinned():
    got = {s.name: (s.precisions, s.cpu_precisions, s.min_world_size, s.tp_size, s.pp_size, s.zero_stage,
                    s.state_layout, s.grads_in_param_chunks, s.optimizer_offloaded, s.twin_precision)
           for s in plugins.REGISTRY.values()}
    assert got == ENTRIES
    assert {s.name: s.family for s in plugins.REGISTRY.values()}.keys() == ENTRIES.keys()
    assert {s.family for s in plugins.REGISTRY.values()} == set(PLUGIN_CLASS)
    assert [s.name for s in plugins.REGISTRY.values() if s.booster_amp] == ["torch_ddp_fp16"]
    assert [s.name for s in plugins.REGISTRY.values() if s.optimizer == "hybrid_adam"] == [
        "gemini", "gemini_auto", "gemini_offload"]


def test_unknown_name_lists_valid():
    with pytest.raises(ConfigError, match="unknown plugin 'nope'; valid: torch_ddp, torch_ddp_fp16"):
        plugins.get("nope")


def test_select_by_family_and_name():
    assert [s.name for s in plugins.select(["gemini"])] == ["gemini", "gemini_auto", "gemini_offload"]
    assert [s.name for s in plugins.select(["torch_ddp", "gemini_auto"])] == ["torch_ddp", "gemini_auto"]
    with pytest.raises(ConfigError, match="valid families"):
        plugins.select(["zero4"])


def test_registry_covers_the_study_plugins():
    families = {s.family for s in plugins.REGISTRY.values()}
    assert {"torch_ddp", "torch_ddp_fp16", "low_level_zero", "gemini", "hybrid_parallel",
            "torch_fsdp"} <= families
    for s in plugins.REGISTRY.values():
        assert set(s.cpu_precisions) <= set(s.precisions)
        assert s.cpu_precisions or s.cpu_reason, f"{s.name}: say why it needs CUDA"


def test_unsupported_precision_is_one_line():
    with pytest.raises(ConfigError, match="precision 'bf16' is not supported by plugin 'torch_ddp_fp16'; valid: fp16"):
        plugins.get("torch_ddp_fp16").check_precision("bf16")


def test_compat_shims_are_idempotent():
    import torch.distributed as dist

    compat.apply()
    assert compat.apply() == []
    assert dist.is_hccl_available() is False


def test_a_new_family_states_its_facts_on_its_spec_only(monkeypatch):
    """The memory bound and the hand-written twin read the spec: no other module names families."""
    spec = PluginSpec(name="my_zero2", family="my_zero", description="throwaway", factory=lambda ctx: None,
                      precisions=("fp32", "bf16"), cpu_precisions=("fp32",), zero_stage=2, twin_precision="fp32")
    monkeypatch.setitem(plugins.REGISTRY, spec.name, spec)
    groups, skipped = reference.plan([8], model="vit-tiny", device="cpu", twins_of=["my_zero2", "torch_ddp_fp16"])
    assert [g[0].plugin for g in groups] == ["reference_eager", "bare_my_zero2"]
    assert groups[1][0].precision == "fp32" and groups[1][0].mirrors == "my_zero2"
    assert [s["plugin"] for s in skipped] == ["reference_compiled", "bare_torch_ddp_fp16"]
    point = {"plugin": "my_zero2", "precision": "bf16", "model": "vit-base", "batch_size": 32}
    # stage 2 over 4 ranks: 16-bit params whole, 16-bit grads and fp32 master + moments sharded
    shared = memory.lower_bound_gib(precision="bf16", preset=PRESETS["vit-base"], batch_size=32, dp_size=4)
    assert memory.for_point(point | {"dp_size": 4}) < shared
    assert memory.for_point(point | {"dp_size": 4}) == memory.lower_bound_gib(
        precision="bf16", preset=PRESETS["vit-base"], batch_size=32, dp_size=4, zero_stage=2)


def test_twins_are_the_entries_that_name_one():
    assert [s.name for s in reference.twins(plugins.REGISTRY)] == ["torch_ddp", "torch_ddp_fp16"]
    assert [(s.name, s.twin_precision) for s in reference.twins(["torch_ddp_fp16"])] == [("torch_ddp_fp16", "fp16")]


@pytest.mark.parametrize("bad", [dict(state_layout="fp8"), dict(zero_stage=4), dict(twin_precision="bf16")])
def test_family_facts_are_checked(bad):
    with pytest.raises((ValueError, ConfigError)):
        PluginSpec(name="x", family="x", description="", factory=lambda ctx: None, precisions=("fp32",), **bad)
