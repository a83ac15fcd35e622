"""One registry of Booster plugin configurations.

Every name the CLI accepts and every plugin parameter the tests use comes from REGISTRY. An entry
knows its family (the study's plugin names), the precisions it supports, which of them run on the
CPU (gloo), the world size it needs, and its tensor/pipeline sizes. Options such as Gemini's
placement are separate entries rather than name parsing.
"""

from __future__ import annotations

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

    def build(self, ctx: BuildContext):
        self.check_precision(ctx.precision)
        return self.factory(ctx)


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
              options={"stage": _stage}, zero_stage=_stage)
    def _llz(ctx, _stage=_stage):
        from colossalai.booster.plugin import LowLevelZeroPlugin

        return LowLevelZeroPlugin(stage=_stage, precision=ctx.precision, max_norm=ctx.max_norm,
                                  initial_scale=2**5)

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
              optimizer_offloaded=_offloaded)
    def _gemini(ctx, _opts=_opts):
        from colossalai.booster.plugin import GeminiPlugin

        return GeminiPlugin(precision=ctx.precision, max_norm=ctx.max_norm, initial_scale=2**5, **_opts)

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
              plugin_kernels=True, options={"zero_stage": _zero} if _zero else {},
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
        if ctx.plugin_kernels:
            kw.update(enable_fused_normalization=True)
        return HybridParallelPlugin(**kw)


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
