import pytest
import torch

from vitcore import ConfigError
from vitcore.inputs.model import PRESETS, build_model
from vitcore.measure import reference
from vitcore.processes import compat
from vitcore.reporting import memory
from vitcore.spec import plugins
from vitcore.spec.plugins import BuildContext, PluginSpec


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
    assert [s["plugin"] for s in skipped] == ["reference_compiled", "timm_eager", "timm_compiled", "bare_torch_ddp_fp16"]
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


# --- the plugins' own options (issue 17) --------------------------------------------------------------
OWN_OPTIONS = {  # entry -> its options, typed in: an entry that loses or gains one fails
    "low_level_zero_s1": ["overlap_communication", "reduce_bucket_size_in_m"],
    "low_level_zero_s2": ["overlap_communication", "reduce_bucket_size_in_m"],
    "gemini": ["enable_async_reduce", "max_prefetch", "hidden_dim", "shard_param_frac", "offload_optim_frac"],
    "gemini_auto": ["enable_async_reduce", "max_prefetch", "hidden_dim"],
    "gemini_offload": ["enable_async_reduce", "max_prefetch", "hidden_dim", "shard_param_frac", "offload_optim_frac"],
    **{name: ["enable_flash_attention", "enable_jit_fused"] for name in plugins.REGISTRY if name.startswith("hybrid")},
    "torch_fsdp": ["use_orig_params"],
}
# Options a plugin takes no argument for but forwards in a dict to the class it wraps: entry -> that class
FORWARDED = {"torch_fsdp": ("torch.distributed.fsdp", "FullyShardedDataParallel")}


def test_each_entry_declares_its_own_options():
    assert {s.name: [t.name for t in s.tunables] for s in plugins.REGISTRY.values() if s.tunables} == OWN_OPTIONS
    for spec in plugins.REGISTRY.values():
        for t in spec.tunables:
            assert t.why and t.upstream and t.kind in (bool, int, float), (spec.name, t.name)
            assert t.ablate is None or (t.check(t.ablate) is None and t.ablate != spec.value(t.name)), (spec.name, t.name)
            assert t == plugins.tunables()[t.name] or (t.kind, t.low, t.high) == (
                plugins.tunables()[t.name].kind, plugins.tunables()[t.name].low, plugins.tunables()[t.name].high)


def _upstream_class(family: str):
    from colossalai.booster import plugin as booster_plugin

    return getattr(booster_plugin, PLUGIN_CLASS[family])


def test_every_option_is_an_upstream_argument_with_the_stated_default_and_code():
    """Each option is a keyword of the plugin class with the default the registry states, and the files
    and functions its `upstream` names exist in the installed colossalai."""
    import importlib
    import inspect
    import pathlib
    import re

    import colossalai
    import torch

    root = pathlib.Path(colossalai.__file__).parent
    for spec in plugins.REGISTRY.values():
        params = inspect.signature(_upstream_class(spec.family).__init__).parameters
        if spec.name in FORWARDED:  # the plugin passes these on (TorchFSDPPlugin.fsdp_kwargs -> FSDP)
            module, cls = FORWARDED[spec.name]
            plugin_source = inspect.getsource(_upstream_class(spec.family))
            assert "self.fsdp_kwargs = dict(" in plugin_source and "**self.fsdp_kwargs" in \
                inspect.getsource(inspect.getmodule(_upstream_class(spec.family))), spec.name
            params = inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters
        for t in spec.tunables:
            assert t.name in params and params[t.name].default == t.default, (spec.name, t.name)
            for part in t.upstream.split("; "):
                path, _, names = part.partition(": ")
                # paths are colossalai's (its package root), or torch's where they start with torch/
                source = (pathlib.Path(torch.__file__).parent.parent / path if path.startswith("torch/")
                          else root / path).read_text()
                for name in re.sub(r"\([^)]*\)", "", names).replace(",", " ").split():
                    last = name.split(".")[-1]
                    assert re.search(rf"(def|class) {re.escape(last)}\b", source), (t.name, path, name)


@pytest.mark.parametrize("name,options,expect", [
    ("low_level_zero_s1", {}, {"overlap_communication": True, "reduce_bucket_size": 12 * 2**20}),
    ("low_level_zero_s1", {"overlap_communication": False, "reduce_bucket_size_in_m": 128},
     {"overlap_communication": False, "reduce_bucket_size": 128 * 2**20}),
    # enable_async_reduce=True forces pin_memory on (GeminiPlugin.__init__): the entry's default as built
    ("gemini", {}, {"enable_async_reduce": True, "pin_memory": True, "max_prefetch": 0, "hidden_dim": None,
                    "shard_param_frac": 1.0, "offload_optim_frac": 0.0}),
    ("gemini", {"enable_async_reduce": False, "max_prefetch": 2, "hidden_dim": 768, "shard_param_frac": 0.0},
     {"enable_async_reduce": False, "pin_memory": False, "max_prefetch": 2, "hidden_dim": 768, "shard_param_frac": 0.0}),
    ("gemini_offload", {"offload_optim_frac": 0.5}, {"offload_optim_frac": 0.5, "pin_memory": True}),
    ("hybrid_parallel", {}, {"enable_flash_attention": False, "enable_jit_fused": False}),
    ("hybrid_parallel", {"enable_flash_attention": True, "enable_jit_fused": True},
     {"enable_flash_attention": True, "enable_jit_fused": True}),
])
def test_plugin_options_reach_the_constructed_plugin(name, options, expect, cpu_process_group):
    """Built on the CPU (construction needs no CUDA; boosting LowLevelZero and Gemini does): the value
    each option left in the plugin's own configuration."""
    spec = plugins.get(name).with_options(options)
    plugin = spec.build(BuildContext(precision="bf16" if name != "hybrid_parallel" else "fp32"))
    config = (getattr(plugin, "zero_optim_kwargs", None) or getattr(plugin, "gemini_config", None)
              or vars(plugin.shard_config))
    assert {k: config[k] for k in expect} == expect


def test_an_option_the_entry_lacks_is_one_line_naming_its_options():
    with pytest.raises(ConfigError, match="plugin 'torch_ddp' has no option 'max_prefetch'; its options: none"):
        plugins.get("torch_ddp").with_options({"max_prefetch": 2})
    with pytest.raises(ConfigError, match="plugin 'gemini_auto' has no option 'shard_param_frac'; its options: "
                                          "enable_async_reduce, max_prefetch, hidden_dim"):
        plugins.get("gemini_auto").with_options({"shard_param_frac": 0.0})
    with pytest.raises(ConfigError, match=r"max_prefetch takes an integer >= 0, not 1.5"):
        plugins.get("gemini").with_options({"max_prefetch": 1.5})


def _shard_vit(plugin):
    """vit-tiny through shardformer with the plugin's own ShardConfig: {module name: forward's qualified name}."""
    from colossalai.shardformer import ShardFormer

    model, _ = build_model(PRESETS["vit-tiny"], labels=["a", "b", "c"], weights="random")
    model, _ = ShardFormer(plugin.shard_config).optimize(model)
    return {n: getattr(m.forward, "__qualname__", "") for n, m in model.named_modules()}


def test_shardformer_vit_policy_ignores_fused_normalization(cpu_process_group):
    """enable_fused_normalization (the profile's plugin_kernels) replaces nothing in shardformer's ViT
    policy; enable_flash_attention replaces every self-attention's forward, enable_jit_fused every
    ViTOutput's (colossalai/shardformer/policies/vit.py)."""
    def forwards(**kw):
        ctx = BuildContext(precision="fp32", plugin_kernels=kw.pop("plugin_kernels", False))
        return _shard_vit(plugins.get("hybrid_parallel").with_options(kw).build(ctx))

    base = forwards()
    changed = {k: {n for n, f in v.items() if f != base[n]} for k, v in {
        "fused_normalization": forwards(plugin_kernels=True),
        "flash": forwards(enable_flash_attention=True), "jit": forwards(enable_jit_fused=True)}.items()}
    layers = PRESETS["vit-tiny"].num_layers
    assert changed["fused_normalization"] == set()
    assert changed["flash"] == {f"vit.encoder.layer.{i}.attention.attention" for i in range(layers)}
    assert changed["jit"] == {f"vit.encoder.layer.{i}.output" for i in range(layers)}


def test_performance_doc_lists_every_option_with_its_upstream_files():
    import pathlib

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "performance.md").read_text()
    leads = doc[doc.index("## Leads for issue 17"):]
    for name, t in plugins.tunables().items():
        row = next((ln for ln in leads.splitlines() if ln.startswith("|") and f"`{name}`" in ln), "")
        assert row, f"docs/performance.md: no row for {name}"
        for part in t.upstream.split("; "):
            assert f"`{part.partition(': ')[0]}`" in row, (name, part)


@pytest.mark.parametrize("options,jit_layers", [({}, 0), ({"enable_jit_fused": True}, PRESETS["vit-tiny"].num_layers)])
def test_a_runs_plugin_options_reach_the_boosted_model(options, jit_layers, cpu_process_group):
    """RunConfig.plugin_options -> RunConfig.spec -> train.setup's plugin -> the boosted model: the path
    a bench point takes (hybrid_parallel fp32 boosts on a CPU)."""
    from vitcore.spec.config import RunConfig
    from vitcore.training import train

    cfg = RunConfig(plugin="hybrid_parallel", device="cpu", model="vit-tiny", batch_size=2, plugin_options=options)
    s = train.setup(cfg, synthetic_batch=True)
    assert sum(hasattr(m, "dropout_add") for m in s.model.modules()) == jit_layers
