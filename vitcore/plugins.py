"""One registry of Booster plugin configurations.

Every name the CLI accepts and every plugin parameter the tests use comes from REGISTRY. An entry
knows its family (the study's plugin names), the precisions it supports, which of them run on the
CPU (gloo), the world size it needs, and its tensor/pipeline sizes. Options such as Gemini's
placement are separate entries rather than name parsing. The plugin's own tuning knobs (issue 17) are
declared on the entry too (`PluginSpec.tunables`): each one names the upstream code it changes and
what it should do on one GPU; `--option NAME=VALUE` sets one, `vitcore bench --ablate` flips each.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vitcore import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True, kw_only=True)
class BuildContext:
    """What a factory needs besides its own fixed options."""

    precision: str
    tp_size: int = 1
    pp_size: int = 1
    plugin_kernels: bool = False  # the plugin's own fused kernels where it has them
    max_norm: float = 0.0
    plugin_options: dict = field(default_factory=dict)  # set by PluginSpec.build from the entry's settings


@dataclass(frozen=True, kw_only=True)
class Tunable:
    """A plugin constructor argument left as the entry sets it (upstream's default unless the entry's
    `options` say otherwise) until `--option NAME=VALUE` sets it. `ablate`: the value `vitcore bench
    --ablate` measures against the entry's (None: not flipped; `why` says why)."""

    name: str
    kind: type  # bool, int or float
    default: Any  # upstream's default (the plugin's __init__)
    why: str  # what it should do on one GPU, in one line
    upstream: str  # the upstream code it changes, as colossalai/<file>: <function>
    low: float = 0  # smallest valid value of an int or float
    high: float | None = None
    ablate: Any = None
    needs_cuda: bool = False  # its code path fails without CUDA: not flipped on a CPU, not set there by a profile
    fast: Any = None  # the fast profile's value, where an H100 measured it better (docs/performance.md); None: the entry's

    def valid(self) -> str:
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a number"
        return f"{what} in [{self.low:g}, {self.high:g}]" if self.high is not None else f"{what} >= {self.low:g}"

    def parse(self, text: str):
        """The value typed after NAME=, or ConfigError naming the valid values."""
        value: Any = {"true": True, "false": False}.get(text.lower(), text)
        if self.kind is not bool:
            with contextlib.suppress(ValueError):
                value = self.kind(text)
        self.check(value)
        return value

    def check(self, value) -> None:
        typed = isinstance(value, bool) if self.kind is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (self.kind is float or isinstance(value, int)))
        if not typed or (self.kind is not bool and not self.low <= value <= (self.high if self.high is not None else value)):
            raise ConfigError(f"{self.name} takes {self.valid()}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class PluginSpec:
    name: str
    family: str
    description: str
    factory: Callable[[BuildContext], Any]
    precisions: tuple[str, ...]
    cpu_precisions: tuple[str, ...] = ()  # precisions that run on the CPU under gloo
    cpu_reason: str = ""  # why the others do not
    min_world_size: int = 1
    tp_size: int = 1
    pp_size: int = 1
    optimizer: str = "adamw"  # "adamw" (torch) or "hybrid_adam" (colossalai; Gemini requires it)
    booster_amp: bool = False  # mixed precision is the Booster's argument, not the plugin's
    options: dict = field(default_factory=dict)  # fixed options, for reports
    parallel_sizes: bool = False  # tp/pp sizes may be overridden per run (hybrid_parallel)
    plugin_kernels: bool = False  # has its own fused kernels to switch on (RunConfig.plugin_kernels)
    # Family facts: vitcore.memory's lower bound and vitcore.reference's twin read these, so a new
    # entry states them here and nothing else needs an edit.
    zero_stage: int = 0
    """What the memory bound shards over data-parallel ranks: 1 optimizer states, 2 also gradients,
    3 also parameters."""
    state_layout: str = "mixed"
    """Model states at 16-bit precisions: "mixed" (16-bit parameters and gradients, fp32 master
    copy) or "amp" (fp32 parameters and gradients, 16-bit autocast); fp32 training is fp32 throughout."""
    grads_in_param_chunks: bool = False
    """Reduced 16-bit gradients are written into the parameters' own chunks (no memory of their own)."""
    optimizer_offloaded: bool = False
    """Optimizer states may live on the CPU (offloaded, or placed there by memory pressure)."""
    twin_precision: str | None = None
    """Precision of the entry's hand-written twin (vitcore.reference.bare_loop); None: no twin."""
    tunables: tuple[Tunable, ...] = ()
    """The plugin's own tuning options (issue 17), each at the entry's value unless a run sets it."""
    settings: tuple[tuple[str, Any], ...] = ()
    """This run's plugin options (RunConfig.plugin_options, through `with_options`); () for the registry's entry."""

    def __post_init__(self):
        if self.state_layout not in ("mixed", "amp"):
            raise ValueError(f"{self.name}: state_layout {self.state_layout!r}; valid: mixed, amp")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"{self.name}: zero_stage {self.zero_stage}; valid: 0-3")
        if self.twin_precision is not None:
            self.check_precision(self.twin_precision)

    @property
    def uses_pipeline(self) -> bool:
        return self.pp_size > 1

    def needs_cuda(self, precision: str) -> bool:
        return precision not in self.cpu_precisions

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise ConfigError(
                f"precision {precision!r} is not supported by plugin {self.name!r}; "
                f"valid: {', '.join(self.precisions)}"
            )

    def tunable(self, name: str) -> Tunable:
        found = next((t for t in self.tunables if t.name == name), None)
        if found is not None:
            return found
        raise ConfigError(f"plugin {self.name!r} has no option {name!r}; its options: "
                          f"{', '.join(t.name for t in self.tunables) or 'none'}")

    def value(self, name: str):
        """The option's value in this entry as configured: this run's setting, else the entry's own, else upstream's."""
        return dict(self.settings).get(name, self.options.get(name, self.tunable(name).default))

    def with_options(self, plugin_options: dict) -> PluginSpec:
        """This entry with a run's plugin options checked and bound: `build` passes them to the factory."""
        for name, value in plugin_options.items():
            self.tunable(name).check(value)
        return dataclasses.replace(self, settings=tuple(sorted(plugin_options.items())))

    def build(self, ctx: BuildContext):
        self.check_precision(ctx.precision)
        return self.factory(dataclasses.replace(ctx, plugin_options=dict(self.settings)))


REGISTRY: dict[str, PluginSpec] = {}


def register(name: str, **kw):
    def deco(factory):
        if name in REGISTRY:
            raise RuntimeError(f"plugin {name!r} registered twice")
        REGISTRY[name] = PluginSpec(name=name, factory=factory, **kw)
        return factory

    return deco


def get(name: str) -> PluginSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown plugin {name!r}; valid: {', '.join(REGISTRY)}") from None


def select(patterns: list[str] | None) -> list[PluginSpec]:
    """Entries matching families or names; a family wins (``gemini`` selects every gemini entry)."""
    if not patterns:
        return list(REGISTRY.values())
    families = {s.family for s in REGISTRY.values()}
    out = []
    for p in patterns:
        if p in families:
            hits = [s for s in REGISTRY.values() if s.family == p]
        elif p in REGISTRY:
            hits = [REGISTRY[p]]
        else:
            raise ConfigError(
                f"unknown plugin {p!r}; valid names: {', '.join(REGISTRY)}; "
                f"valid families: {', '.join(sorted(families))}"
            )
        out += [h for h in hits if h not in out]
    return out


def tunables() -> dict[str, Tunable]:
    """Every entry's options by name, in registry order (entries sharing a name share its kind and range)."""
    return {t.name: t for s in REGISTRY.values() for t in s.tunables}


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


# --- entries -------------------------------------------------------------------------------------
# Factories import colossalai (and torch) when called: `import colossalai.booster.plugin` took 8.1 s here
# (measured), and listing, selecting or planning entries needs none of it.
_CUDA_ONLY = "colossalai {} needs a CUDA accelerator (measured: fails on the CPU accelerator)"


@register("torch_ddp", family="torch_ddp", description="PyTorch DDP, fp32",
          precisions=("fp32",), cpu_precisions=("fp32",), twin_precision="fp32")
def _torch_ddp(ctx):
    from colossalai.booster.plugin import TorchDDPPlugin

    return TorchDDPPlugin()


@register("torch_ddp_fp16", family="torch_ddp_fp16",
          description="PyTorch DDP with the Booster's CUDA AMP fp16 (bf16 is not implemented there)",
          precisions=("fp16",), cpu_reason="the Booster's fp16 is CUDA AMP", booster_amp=True,
          state_layout="amp", twin_precision="fp16")
def _torch_ddp_fp16(ctx):
    from colossalai.booster.plugin import TorchDDPPlugin

    return TorchDDPPlugin()  # the precision goes to Booster(mixed_precision=...), see booster_kwargs


for _stage in (1, 2):
    @register(f"low_level_zero_s{_stage}", family="low_level_zero",
              description=f"ZeRO stage {_stage}: optimizer states{' and gradients' if _stage == 2 else ''} "
                          "sharded across data-parallel ranks",
              precisions=("fp16", "bf16"), cpu_reason=_CUDA_ONLY.format("LowLevelZeroPlugin"),
              options={"stage": _stage}, zero_stage=_stage, tunables=_LLZ_OPTIONS)
    def _llz(ctx, _stage=_stage):
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
              optimizer_offloaded=_offloaded, tunables=_GEMINI_OPTIONS + _STATIC_OPTIONS.get(_name, ()))
    def _gemini(ctx, _opts=_opts):
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
              # the memory bound counts no sharding here, neither tp/pp nor the _zero1 entry's ZeRO-1
              # in the dp groups (kept at 0: the recorded bounds do not change)
              zero_stage=0)
    def _hybrid(ctx, _zero=_zero):
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
    from colossalai.shardformer.policies.vit import ViTForImageClassificationPolicy
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
          zero_stage=3, state_layout="amp")
def _torch_fsdp(ctx):
    import torch
    from colossalai.booster.plugin import TorchFSDPPlugin
    from torch.distributed.fsdp import MixedPrecision

    mp = None
    if ctx.precision == "bf16":
        mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16,
                            buffer_dtype=torch.bfloat16)
    return TorchFSDPPlugin(mixed_precision=mp)


def unrunnable_reason(spec: PluginSpec, precision: str, world_size: int, device: str) -> str | None:
    """Why this entry cannot run here, or None."""
    if device == "cpu" and spec.needs_cuda(precision):
        return f"needs CUDA ({spec.cpu_reason})"
    if device == "cuda":
        import torch  # 2.4 s to import (measured); `vitcore plugins` and CPU planning never need it

        if torch.cuda.device_count() < world_size:
            return f"needs {world_size} GPUs, {torch.cuda.device_count()} present"
    return None


def booster_kwargs(spec: PluginSpec, precision: str) -> dict:
    """Booster-level arguments: TorchDDP takes its mixed precision from the Booster."""
    return {"mixed_precision": precision} if spec.booster_amp else {}
