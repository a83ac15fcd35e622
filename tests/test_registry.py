import pytest
import torch

from vitcore import ConfigError, compat, plugins
from vitcore.plugins import BuildContext


def test_every_entry_constructs_or_skips_with_reason(spec, precision, cpu_process_group):
    """Each (entry, precision) builds its Booster plugin here, or is skipped saying why."""
    if spec.needs_cuda(precision) and not torch.cuda.is_available():
        pytest.skip(f"{spec.name} {precision} needs CUDA: {spec.cpu_reason}")
    if spec.min_world_size > 1:
        pytest.skip(f"{spec.name} needs {spec.min_world_size} processes; this test builds in one (tp2 and pp2 run in test_parity)")
    plugin = spec.build(BuildContext(precision=precision, tp_size=spec.tp_size, pp_size=spec.pp_size))
    assert plugin.__class__.__name__.endswith("Plugin")


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
