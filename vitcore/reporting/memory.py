"""A lower bound of peak GPU memory per GPU, to show how far each plugin is from what it could be.

Model states: parameters, gradients and Adam states at the precisions the plugin keeps them in,
divided by the data-parallel size where the plugin shards them. Activations: what backward needs
per transformer layer without recomputation, ~30·s·h bytes per image at 16 bits (Korthikanti et al.
2022, eq. 1, without dropout masks and with fused attention, which stores no s×s matrix), doubled
in fp32; with gradient checkpointing, only each layer's input (2·s·h bytes) plus one layer's full
set. Workspace, fragmentation and communication buffers are left out: it is a bound, not a model.
"""

from __future__ import annotations

from vitcore import ConfigError
from vitcore.inputs.model import ModelPreset, get_preset
from vitcore.spec import plugins

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


def lower_bound_gib(*, precision: str, preset: ModelPreset, batch_size: int, state_layout: str = "mixed",
                    grads_in_param_chunks: bool = False, dp_size: int = 1, grad_checkpoint: bool = False,
                    offload_optimizer: bool = False, zero_stage: int = 0) -> float:
    """state_layout, grads_in_param_chunks, zero_stage: as PluginSpec's fields (zero_stage 1 shards
    optimizer states, 2 also gradients, 3 also parameters); fp32 training is fp32 in any layout."""
    p = param_count(preset)
    w, g, o = _STATES["fp32" if precision == "fp32" else state_layout]
    if grads_in_param_chunks and precision != "fp32":
        g = 0  # written into the 16-bit parameter chunks (Gemini; measured on an H100, see plugins.py)
    n = max(dp_size, 1)
    states = p * (w / (n if zero_stage >= 3 else 1) + g / (n if zero_stage >= 2 else 1)
                  + (0 if offload_optimizer else o / (n if zero_stage >= 1 else 1)))
    s, h, layers = preset.num_tokens, preset.hidden_size, preset.num_layers
    scale = 2 if precision == "fp32" else 1
    per_layer = 30 * s * h * scale
    acts = (layers * 2 * s * h * scale + per_layer) if grad_checkpoint else layers * per_layer
    return (states + acts * batch_size) / GIB


def for_point(point: dict) -> float | None:
    """The bound for a bench point, from its plugin entry's family facts and its settings."""
    try:
        spec = plugins.get(point["plugin"])
        preset = get_preset(point["model"])
    except (ConfigError, KeyError):  # the reference, an unknown entry or preset, a point without them
        return None
    return lower_bound_gib(precision=point["precision"], preset=preset, batch_size=point["batch_size"],
                           state_layout=spec.state_layout, grads_in_param_chunks=spec.grads_in_param_chunks,
                           dp_size=point.get("dp_size") or 1, grad_checkpoint=bool(point.get("grad_checkpoint")),
                           offload_optimizer=spec.optimizer_offloaded, zero_stage=spec.zero_stage)
