"""The plugin registry: each Booster plugin configuration the suite measures, with its family facts
and its own tunables (issue 17), registered on import. Adding a plugin is one `@register(...)` here.
The registry's API (PluginSpec, Tunable, register, select, ...) lives in `vitcore.spec.registry` and
is re-exported: `from vitcore.spec import plugins; plugins.select([...])`."""

from __future__ import annotations

import dataclasses

from vitcore.spec.registry import (
    PRECISIONS,
    REGISTRY,
    BuildContext,
    CompilePlan,
    PluginSpec,
    Tunable,
    booster_kwargs,
    get,
    register,
    select,
    settable,
    tunables,
    unrunnable_reason,
)

__all__ = ["PRECISIONS", "REGISTRY", "BuildContext", "CompilePlan", "PluginSpec", "Tunable", "booster_kwargs", "get", "register",
           "select", "settable", "tunables", "unrunnable_reason"]  # the API, re-exported beside the entries

# --- the plugins' own options (issue 17; docs/performance.md "Leads for issue 17") ----------------
# Read in colossalai 0.5.0's sources; paths are under colossalai/.
_LLZ_OPTIONS = (
    # fast: host time per step 19.6 -> 13.8 ms at bs128, device time, launches and memory equal
    # (reports/h100-leads/2026-11-26-c834c9c)
    Tunable(name="overlap_communication", kind=bool, default=True, ablate=False, fast=False,
            why="True hooks every parameter (post-accumulate-grad), reduces on a side stream and synchronizes the "
                "whole device after backward; one GPU has nothing to overlap",
            upstream="zero/low_level/low_level_optim.py: LowLevelZeroOptimizer.__init__ (_attach_reduction_hook), "
                     "backward (a device synchronize), _run_reduction (comm_stream)"),
    Tunable(name="reduce_bucket_size_in_m", kind=int, default=12, low=1, ablate=128,
            why="gradients are flattened, divided, all-reduced (a copy on one rank) and copied back per bucket of "
                "this many million elements: 128 takes ViT-B's 86M in one bucket instead of 8",
            upstream="zero/low_level/low_level_optim.py: _add_to_bucket, _run_reduction, _sync_grad"),
)
_GEMINI_OPTIONS = (
    Tunable(name="enable_async_reduce", kind=bool, default=True, ablate=False,
            why="True reduces each gradient chunk on a side stream and forces pin_memory=True; on one GPU the "
                "reduce is a copy, and memory used across streams is freed late: suspected cause of the bimodal "
                "steady peak (gemini bf16 bs128: 9.000 vs 9.485 GiB per process)",
            upstream="zero/gemini/gemini_ddp.py: GeminiDDP.grad_handle (async_reduce_stream), _post_backward "
                     "(synchronize); booster/plugin/gemini_plugin.py: GeminiPlugin.__init__ (pin_memory)"),
    Tunable(name="max_prefetch", kind=int, default=0, low=0, ablate=2,
            why="gathers up to this many chunks ahead on a prefetch stream; on one GPU a gather copies the chunk's "
                "single shard back, which prefetching can overlap with compute",
            upstream="zero/gemini/gemini_hook.py: GeminiZeROHook.pre_op; zero/gemini/placement_policy.py: "
                     "get_prefetch_chunks; zero/gemini/chunk/manager.py: ChunkManager (_prefetch_stream)"),
    Tunable(name="hidden_dim", kind=int, default=None, low=1, ablate=768,
            why="the chunk-size search steps by this (1024 when unset); ViT-B's hidden size lets chunks end on "
                "parameter boundaries (less padding, maybe fewer chunks)",
            upstream="zero/gemini/chunk/utils.py: init_chunk_manager (search_interval); "
                     "zero/gemini/chunk/search_utils.py: search_chunk_configuration"),
)
_SHARD_PARAM = Tunable(
    name="shard_param_frac", kind=float, default=1.0, low=0.0, high=1.0, ablate=0.0,
    why="share of chunks released between uses; on one GPU the shard is the whole chunk, so a release and re-gather "
        "are two copies: 0.0 keeps chunks gathered (the scatter after each reduce stays: Chunk.reduce)",
    upstream="zero/gemini/placement_policy.py: StaticPlacementPolicy.setup_grads_device, evict_tensors; "
             "zero/gemini/chunk/chunk.py: Chunk.__scatter, __gather, reduce")
_OFFLOAD_OPTIM = Tunable(
    name="offload_optim_frac", kind=float, default=0.0, low=0.0, high=1.0,
    why="share of optimizer states (by chunk) on the CPU; on one GPU a memory lever, not a speed one, and "
        "gemini_offload measures 1.0: not flipped",
    upstream="zero/gemini/placement_policy.py: StaticPlacementPolicy.setup_grads_device")
_STATIC_OPTIONS = {  # static placement only
    "gemini": (_SHARD_PARAM, _OFFLOAD_OPTIM),
    "gemini_offload": (dataclasses.replace(_SHARD_PARAM, ablate=None, why=_SHARD_PARAM.why + "; not flipped here: "
                       "gathered chunks keep their optimizer states on the GPU, undoing the offload"), _OFFLOAD_OPTIM),
}
_HYBRID_OPTIONS = (
    # fast: device time per step 48.08 -> 43.31 ms (-9.9%) and 84 fewer launches at bs128
    # (reports/h100-leads/2026-11-26-c834c9c)
    Tunable(name="enable_flash_attention", kind=bool, default=False, ablate=True, needs_cuda=True, fast=True,
            why="replaces ViTSelfAttention.forward with ColoAttention: flash-attn's kernel where the flash_attn "
                "package is installed, else torch SDPA, which the fast profile's attention already is",
            upstream="shardformer/policies/vit.py: ViTPolicy.module_policy; shardformer/modeling/vit.py: "
                     "get_vit_flash_self_attention_forward; shardformer/layer/attn.py: ColoAttention.attention"),
    Tunable(name="enable_jit_fused", kind=bool, default=False, ablate=True,
            why="replaces ViTOutput.forward with a TorchScript bias-dropout-add (with a zeros_like bias per layer); "
                "the fused bias-GeLU applies only with tensor parallelism",
            upstream="shardformer/policies/vit.py: ViTPolicy.preprocess, module_policy; "
                     "shardformer/modeling/jit.py: get_jit_fused_dropout_add_func"),
)


# --- where torch.compile applies (issue 29): the other entries compile before boosting ---------------
# Passed the compiled tier (parity, checkpoint, convergence) on the H200, reports/gpu/2026-12-04-2132d56-compile:
# torch_ddp, torch_ddp_fp16, low_level_zero_s1, low_level_zero_s2. Each may take fast=True once its budgets
# are re-recorded under the compiled fast profile (gpu_stages.sh fast_record); none has been yet.
_COMPILE_AFTER = {
    "hybrid_parallel": CompilePlan(where="after", why="shardformer replaces the model's modules while boosting "
                                   "(its policy is looked up by the model's class): compile what it produced"),
    "gemini": CompilePlan(where="after", why="GeminiDDP moves the parameters into chunks while boosting: compile "
                          "the module that runs on them"),
    "torch_fsdp": CompilePlan(where="after", why="FSDP flattens the parameters while wrapping; torch compiles FSDP "
                              "(version 1) as the wrapped module, and only with use_orig_params (measured on the "
                              "H200: without it dynamo captured no graph)",
                              plugin_options=(("use_orig_params", True),)),
}
_FSDP_TUNABLES = (
    Tunable(name="use_orig_params", kind=bool, default=False,
            why="FSDP exposes the module's own parameters as views into its flat parameter: dynamo traces an FSDP "
                "module only then ('Dynamo only supports FSDP with use_orig_params=True'), so a compiled run sets it",
            upstream="booster/plugin/torch_fsdp_plugin.py: TorchFSDPPlugin (no constructor argument: set on its "
                     "fsdp_kwargs, passed to FSDP); torch/distributed/fsdp/fully_sharded_data_parallel.py: "
                     "FullyShardedDataParallel"),
)

# --- entries -------------------------------------------------------------------------------------
# Factories import colossalai (and torch) when called: `import colossalai.booster.plugin` took 8.1 s here
# (measured), and listing, selecting or planning entries needs none of it.
_CUDA_ONLY = "colossalai {} needs a CUDA accelerator (measured: fails on the CPU accelerator)"


@register("torch_ddp", family="torch_ddp", description="PyTorch DDP, fp32",
          precisions=("fp32",), cpu_precisions=("fp32",), twin_precision="fp32")
def _torch_ddp(ctx):
    # colossalai: 4-8 s to import, paid only when this runs
    from colossalai.booster.plugin import TorchDDPPlugin

    return TorchDDPPlugin()


@register("torch_ddp_fp16", family="torch_ddp_fp16",
          description="PyTorch DDP with the Booster's CUDA AMP fp16 (bf16 is not implemented there)",
          precisions=("fp16",), cpu_reason="the Booster's fp16 is CUDA AMP", booster_amp=True,
          state_layout="amp", twin_precision="fp16")
def _torch_ddp_fp16(ctx):
    # colossalai: 4-8 s to import, paid only when this runs
    from colossalai.booster.plugin import TorchDDPPlugin

    return TorchDDPPlugin()  # the precision goes to Booster(mixed_precision=...), see booster_kwargs


for _stage in (1, 2):
    @register(f"low_level_zero_s{_stage}", family="low_level_zero",
              description=f"ZeRO stage {_stage}: optimizer states{' and gradients' if _stage == 2 else ''} "
                          "sharded across data-parallel ranks",
              precisions=("fp16", "bf16"), cpu_reason=_CUDA_ONLY.format("LowLevelZeroPlugin"),
              options={"stage": _stage}, zero_stage=_stage, tunables=_LLZ_OPTIONS)
    def _llz(ctx, _stage=_stage):
        # colossalai: 4-8 s to import, paid only when this runs
        from colossalai.booster.plugin import LowLevelZeroPlugin

        return LowLevelZeroPlugin(stage=_stage, precision=ctx.precision, max_norm=ctx.max_norm,
                                  initial_scale=2**5, **ctx.plugin_options)

_GEMINI = {  # name: (description, options, optimizer states possibly on the CPU)
    "gemini": ("static placement, everything on the GPU", dict(placement_policy="static"), False),
    "gemini_auto": ("auto placement (chunks move between GPU and CPU by memory pressure)",
                    dict(placement_policy="auto"), True),
    "gemini_offload": ("static placement with optimizer states offloaded to the CPU "
                       "(the upstream ViT example's setting)",
                       dict(placement_policy="static", offload_optim_frac=1.0, pin_memory=True), True),
}
for _name, (_desc, _opts, _offloaded) in _GEMINI.items():
    # GeminiDDP(reuse_fp16_chunk=master_weights): reduced 16-bit gradients are written into the
    # parameter's own chunk (an H100 point, gemini fp16 bs8 with checkpointing, peaked at 1.339 GiB,
    # below a bound that counted them)
    @register(_name, family="gemini", description=f"Gemini (ZeRO-3 with chunks): {_desc}",
              precisions=("fp16", "bf16"), cpu_reason=_CUDA_ONLY.format("GeminiPlugin"),
              optimizer="hybrid_adam", options=_opts, zero_stage=3, grads_in_param_chunks=True,
              optimizer_offloaded=_offloaded, tunables=_GEMINI_OPTIONS + _STATIC_OPTIONS.get(_name, ()),
              compile=_COMPILE_AFTER["gemini"])
    def _gemini(ctx, _opts=_opts):
        # colossalai: 4-8 s to import, paid only when this runs
        from colossalai.booster.plugin import GeminiPlugin

        return GeminiPlugin(precision=ctx.precision, max_norm=ctx.max_norm, initial_scale=2**5,
                            **(_opts | ctx.plugin_options))

_HYBRID = {"hybrid_parallel": (1, 1, 0), "hybrid_parallel_tp2": (2, 1, 0), "hybrid_parallel_pp2": (1, 2, 0),
           "hybrid_parallel_tp2pp2": (2, 2, 0), "hybrid_parallel_tp2_zero1": (2, 1, 1)}
for _name, (_tp, _pp, _zero) in _HYBRID.items():
    # ZeRO inside the data-parallel groups needs a second dp rank to shard over (world size 4 at
    # tp=2), and colossalai's ZeRO optimizer is CUDA-only and mixed-precision.
    @register(_name, family="hybrid_parallel",
              description=f"HybridParallelPlugin tp={_tp} pp={_pp}{f' zero stage {_zero} in the dp groups' if _zero else ''} "
                          f"(shardformer){'; pipeline steps via booster.execute_pipeline' if _pp > 1 else ''}",
              precisions=("fp16", "bf16") if _zero else ("fp32", "fp16", "bf16"),
              cpu_precisions=() if _zero else ("fp32",),
              cpu_reason=_CUDA_ONLY.format("ZeRO") if _zero else "mixed precision needs a CUDA accelerator",
              min_world_size=_tp * _pp * (2 if _zero else 1), tp_size=_tp, pp_size=_pp, parallel_sizes=True,
              plugin_kernels=True, options={"zero_stage": _zero} if _zero else {}, tunables=_HYBRID_OPTIONS,
              compile=_COMPILE_AFTER["hybrid_parallel"],
              # the memory bound counts no sharding here, neither tp/pp nor the _zero1 entry's ZeRO-1
              # in the dp groups (kept at 0: the recorded bounds do not change)
              zero_stage=0)
    def _hybrid(ctx, _zero=_zero):
        # colossalai: 4-8 s to import, paid only when this runs
        from colossalai.booster.plugin import HybridParallelPlugin

        kw = dict(tp_size=ctx.tp_size, pp_size=ctx.pp_size, precision=ctx.precision,
                  max_norm=ctx.max_norm, initial_scale=2**5, zero_stage=_zero)
        if ctx.pp_size > 1:
            kw["num_microbatches"] = ctx.pp_size
        if ctx.tp_size > 1:
            kw["custom_policy"] = _replicated_head_policy()
        if ctx.plugin_kernels:  # no effect on shardformer's ViT policy (docs/performance.md, issue 17)
            kw.update(enable_fused_normalization=True)
        return HybridParallelPlugin(**(kw | ctx.plugin_options))


def _replicated_head_policy():
    """shardformer's ViT policy splits the classifier over tp ranks, which needs num_labels to be
    a multiple of tp (dog_food has 3). Keep the classifier whole on every rank instead: its input is
    replicated across the tp group, so its gradients agree without communication."""
    # colossalai: 4-8 s to import, paid only when this runs
    from colossalai.shardformer.policies.vit import ViTForImageClassificationPolicy

    # transformers / safetensors: only when a model or weights file is read
    from transformers.models.vit.modeling_vit import ViTForImageClassification

    class ReplicatedHeadViTPolicy(ViTForImageClassificationPolicy):
        def module_policy(self):
            policy = super().module_policy()
            desc = policy.get(ViTForImageClassification)
            if desc is not None and desc.sub_module_replacement:
                desc.sub_module_replacement = [r for r in desc.sub_module_replacement
                                               if r.suffix != "classifier"]
            return policy

    return ReplicatedHeadViTPolicy()


@register("torch_fsdp", family="torch_fsdp",
          description="PyTorch FSDP (full sharding); bf16 through FSDP's own MixedPrecision, "
                      "since the Booster's fp16 setting is silently ignored by this plugin",
          precisions=("fp32", "bf16"), cpu_reason="FSDP's default settings need CUDA",
          zero_stage=3, state_layout="amp", compile=_COMPILE_AFTER["torch_fsdp"], tunables=_FSDP_TUNABLES)
def _torch_fsdp(ctx):
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    # colossalai: 4-8 s to import, paid only when this runs
    from colossalai.booster.plugin import TorchFSDPPlugin

    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    from torch.distributed.fsdp import MixedPrecision

    mp = None
    if ctx.precision == "bf16":
        mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16,
                            buffer_dtype=torch.bfloat16)
    plugin = TorchFSDPPlugin(mixed_precision=mp)
    if "use_orig_params" in ctx.plugin_options:  # no constructor argument: FSDP reads it from this dict
        plugin.fsdp_kwargs["use_orig_params"] = ctx.plugin_options["use_orig_params"]
    return plugin
