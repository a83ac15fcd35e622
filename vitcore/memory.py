"""A lower bound of peak GPU memory per GPU, to show how far each plugin is from what it could be.

Model states: parameters, gradients and Adam states at the precisions the plugin keeps them in,
divided by the data-parallel size where the plugin shards them. Activations: what backward needs
per transformer layer without recomputation, ~30·s·h bytes per image at 16 bits (Korthikanti et al.
2022, eq. 1, without dropout masks and with fused attention, which stores no s×s matrix), doubled
in fp32; with gradient checkpointing, only each layer's input (2·s·h bytes) plus one layer's full
set. Workspace, fragmentation and communication buffers are left out: it is a bound, not a model.
"""

from __future__ import annotations

from vitcore.model import ModelPreset

GIB = 2**30


def param_count(preset: ModelPreset, num_labels: int = 3) -> int:
    h, i, n = preset.hidden_size, preset.intermediate_size, preset.num_tokens
    embed = 3 * preset.patch_size**2 * h + h + h + n * h  # patch projection, [CLS], positions
    layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h  # attention, MLP, two layer norms
    return embed + preset.num_layers * layer + 2 * h + h * num_labels + num_labels


# bytes per parameter: (working params, gradients, fp32 master copy + Adam m and v)
_STATES = {
    "fp32": (4, 4, 8),            # no master copy: Adam's two fp32 moments
    "amp": (4, 4, 8),             # torch AMP keeps fp32 parameters and gradients
    "mixed": (2, 2, 12),          # 16-bit working copy and gradients, fp32 master + moments
}


def lower_bound_gib(*, family: str, precision: str, preset: ModelPreset, batch_size: int,
                    dp_size: int = 1, grad_checkpoint: bool = False, offload_optimizer: bool = False,
                    zero_stage: int = 0) -> float:
    """zero_stage: 1 shards optimizer states, 2 also gradients, 3 also parameters."""
    p = param_count(preset)
    if precision == "fp32":
        w, g, o = _STATES["fp32"]
    elif family in ("torch_ddp_fp16",) or (family == "torch_fsdp"):
        w, g, o = _STATES["amp"]
    else:
        w, g, o = _STATES["mixed"]
        if family == "gemini":
            # GeminiDDP(reuse_fp16_chunk=master_weights): reduced 16-bit gradients are written into
            # the parameter's own chunk, so they take no memory of their own (an H100 point,
            # gemini fp16 bs8 with checkpointing, peaked at 1.339 GiB, below the bound that counted them)
            g = 0
    n = max(dp_size, 1)
    states = p * (w / (n if zero_stage >= 3 else 1) + g / (n if zero_stage >= 2 else 1)
                  + (0 if offload_optimizer else o / (n if zero_stage >= 1 else 1)))
    s, h, layers = preset.num_tokens, preset.hidden_size, preset.num_layers
    scale = 2 if precision == "fp32" else 1
    per_layer = 30 * s * h * scale
    acts = (layers * 2 * s * h * scale + per_layer) if grad_checkpoint else layers * per_layer
    return (states + acts * batch_size) / GIB


def for_point(point: dict) -> float | None:
    """The bound for a bench point, from its recorded plugin entry and settings."""
    from vitcore import plugins
    from vitcore.model import get_preset

    try:
        spec = plugins.get(point["plugin"])
        preset = get_preset(point["model"])
    except Exception:  # noqa: BLE001 - the reference or an unknown entry has no bound
        return None
    opts = spec.options
    stage = {"low_level_zero": opts.get("stage", 1), "gemini": 3, "torch_fsdp": 3}.get(spec.family, 0)
    return lower_bound_gib(family=spec.family, precision=point["precision"], preset=preset,
                           batch_size=point["batch_size"], dp_size=point.get("dp_size") or 1,
                           grad_checkpoint=bool(point.get("grad_checkpoint")),
                           # auto placement may keep optimizer chunks on the CPU, as offload does
                           offload_optimizer=opts.get("offload_optim_frac", 0) > 0
                           or opts.get("placement_policy") == "auto", zero_stage=stage)
