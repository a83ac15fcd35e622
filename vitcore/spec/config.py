"""RunConfig: everything one training or benchmark run needs, validated on construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from vitcore import ConfigError
from vitcore.inputs import model as model_mod
from vitcore.spec import plugins

# Profiles (issue: fast vs the study's settings). A field left as None in RunConfig takes the
# profile's value; precision is profile_precision's choice.
PROFILES = {
    "study": dict(attention="eager", grad_checkpoint=True, compile=False, fused_optimizer=False,
                  plugin_kernels=False, freeze_gc=False, precision_preference=("fp16", "fp32", "bf16")),
    # Each choice measured on an H100 at batch 128 (docs/performance.md): SDPA, no checkpointing,
    # bf16 and fused Adam help; hybrid_parallel's fused LayerNorm (no apex here) and freezing the
    # GC made no difference beyond noise, so they stay off; torch.compile helps the plugins that
    # accept a compiled module but has not passed the GPU parity tests yet, so it is opt-in.
    "fast": dict(attention="sdpa", grad_checkpoint=False, compile=False, fused_optimizer=True,
                 plugin_kernels=False, freeze_gc=False, precision_preference=("bf16", "fp16", "fp32")),
}
# The fields a profile sets; `vitcore bench --ablate` flips them one at a time (docs/performance.md).
OPTIONS = ("attention", "grad_checkpoint", "compile", "fused_optimizer", "plugin_kernels", "freeze_gc")
# What `vitcore bench --ablate [WHICH]` flips: the profile's options (and the precision), the plugins' own
# options (PluginSpec.tunables: issue 17), both, or torch.compile alone (each entry eager and compiled: issue 29).
ABLATE = ("all", "profile", "plugin", "compile")


def _choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def profile_precision(spec: plugins.PluginSpec, profile: str, *, cuda: bool) -> str:
    """The precision `profile` picks for `spec`: its first preference the plugin supports; without
    CUDA, the first of those the CPU runs (the CUDA choice where the CPU runs none of them).
    RunConfig and the tests' parametrization both ask this."""
    _choice("profile", profile, PROFILES)
    prefs = [p for p in PROFILES[profile]["precision_preference"] if p in spec.precisions]
    if not cuda:
        prefs = [p for p in prefs if p in spec.cpu_precisions] or prefs
    return prefs[0]


def profile_plugin_options(spec: plugins.PluginSpec, profile: str, *, cuda: bool) -> dict:
    """The plugin options `profile` sets for `spec` (fast: each tunable's measured `fast` value; one
    that needs CUDA only on CUDA). A run's own --option values win over them."""
    _choice("profile", profile, PROFILES)
    if profile != "fast":
        return {}
    return {t.name: t.fast for t in spec.tunables if t.fast is not None and (cuda or not t.needs_cuda)}


def parse_options(pairs: list[str]) -> dict:
    """`--option NAME=VALUE` pairs: profile options (RunConfig fields, true/false or an attention) and
    the plugins' own options (plugins.tunables()), typed; bad input is one line naming the choices."""
    tunables = plugins.settable()
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or (name not in OPTIONS and name not in tunables):
            raise ConfigError(f"--option {pair!r}: expected NAME=VALUE with NAME one of "
                              f"{', '.join(OPTIONS + tuple(tunables))}")
        try:
            if name == "attention":
                _choice("attention", value, model_mod.ATTENTION)
            elif name in OPTIONS:
                if value.lower() not in ("true", "false"):
                    raise ConfigError(f"{name} takes true or false")
                value = value.lower() == "true"
            else:
                value = tunables[name].parse(value)
        except ConfigError as e:
            raise ConfigError(f"--option {pair!r}: {e}") from None
        out[name] = value
    return out


def split_options(options: dict) -> tuple[dict, dict]:
    """(profile options, plugin options) of parse_options' result."""
    return {k: v for k, v in options.items() if k in OPTIONS}, {k: v for k, v in options.items() if k not in OPTIONS}


def _has_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    # torch adds 3 s to an import (measured); config stays light (0.1 s) for the paths that read
    # only PROFILES and presets (vitcore.reporting.analysis, hence `vitcore report`).
    import torch

    return torch.cuda.is_available()


@dataclass(kw_only=True)
class RunConfig:
    plugin: str = "torch_ddp"
    """Registry entry name (vitcore.spec.plugins.REGISTRY)."""
    precision: str | None = None
    """fp32 | fp16 | bf16; None: the profile's preference the plugin supports."""
    profile: str = "fast"
    """study (the original study's settings) or fast; fills the fields left as None."""
    model: str = "vit-tiny"
    dataset: str = "auto"
    """auto | embedded | lewtun/dog_food | a local folder."""
    weights: str = "auto"
    """auto | random | a local path or hub id (HF cache)."""
    subset: int | None = None
    """Stratified subset of the train split (test keeps the 3:1 ratio)."""
    batch_size: int = 32
    """Per data-parallel rank."""
    epochs: int = 1
    max_steps_per_epoch: int | None = None
    lr: float | None = None
    """None: the model preset's recipe (vitcore.inputs.model.Recipe), as are the two below."""
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    """Warm-up share of all steps before the cosine decay, as in the upstream ViT example."""
    max_norm: float = 0.0
    seed: int = 42
    attention: str | None = None
    grad_checkpoint: bool | None = None
    compile: bool | None = None
    """torch.compile the step where the entry's plan says (PluginSpec.compile); None: the profile's (fast:
    the entry's `compile.fast` on CUDA)."""
    fused_optimizer: bool | None = None
    """torch's fused (single-kernel) Adam on CUDA; Gemini's HybridAdam is always fused."""
    plugin_kernels: bool | None = None
    """The plugin's own fused kernels where it has them (hybrid_parallel: fused LayerNorm)."""
    plugin_options: dict = field(default_factory=dict)
    """The plugin's own options changed from the entry's (PluginSpec.tunables, e.g. {"max_prefetch": 2});
    `spec` carries them to the plugin's constructor. Empty: the entry as registered."""
    freeze_gc: bool | None = None
    """Benchmark only: no automatic Python GC inside timed windows (torchtitan does the same)."""
    variant: str = ""
    """Label of an ablation variant (e.g. "attention=eager"); part of a result's identity."""
    tp_size: int | None = None
    """Tensor-parallel size; None: the plugin entry's. Only hybrid_parallel entries take another."""
    pp_size: int | None = None
    world_size: int = 1
    device: str = "auto"
    """auto | cuda | cpu."""
    timeout_s: float = 900.0
    """A multi-process run that takes longer than this is ended as failed."""
    checkpoint_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        spec = plugins.get(self.plugin)
        _choice("profile", self.profile, PROFILES)
        preset = model_mod.get_preset(self.model)
        _choice("device", self.device, ("auto", "cuda", "cpu"))
        on_cuda = self.device == "cuda" or _has_cuda(self.device)  # a config made for CUDA on a host without it
        self._fill_defaults(spec, preset, on_cuda)
        self._check_values()
        self._check_parallel(spec, preset)
        bound = spec.with_options(self.plugin_options)  # each name and value checked against the entry
        if problem := bound.step_problem(cuda=on_cuda, compiled=self.compile):
            raise ConfigError(problem)

    def _fill_defaults(self, spec: plugins.PluginSpec, preset: model_mod.ModelPreset, on_cuda: bool) -> None:
        """Fields left as None: precision and options from the profile, lr, weight decay and
        warm-up from the model preset's recipe (tp and pp sizes: _check_parallel)."""
        if self.precision is None:
            self.precision = profile_precision(spec, self.profile, cuda=_has_cuda(self.device))
        else:
            _choice("precision", self.precision, plugins.PRECISIONS)
            spec.check_precision(self.precision)
        if self.compile is None and self.profile == "fast":  # compiled only where the GPU proved parity
            self.compile = spec.compile.fast and on_cuda
        for name in OPTIONS:
            if getattr(self, name) is None:
                setattr(self, name, PROFILES[self.profile][name])
        self.plugin_options = profile_plugin_options(spec, self.profile, cuda=on_cuda) | self.plugin_options
        if self.compile:  # what the entry's compiled form needs from the plugin (CompilePlan.plugin_options)
            self.plugin_options = dict(spec.compile.plugin_options) | self.plugin_options
        for name in ("lr", "weight_decay", "warmup_ratio"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset.recipe, name))

    def _check_values(self) -> None:
        _choice("attention", self.attention, model_mod.ATTENTION)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size!r} must be a positive integer")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs {self.epochs!r} must be an integer >= 0")
        if self.subset is not None and self.subset < 1:
            raise ConfigError(f"subset {self.subset!r} must be a positive integer")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"max steps per epoch {self.max_steps_per_epoch!r} must be >= 1")
        if not self.lr >= 0:
            raise ConfigError(f"learning rate {self.lr!r} must be >= 0")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"warm-up ratio {self.warmup_ratio!r} must be in [0, 1]")

    def _check_parallel(self, spec: plugins.PluginSpec, preset: model_mod.ModelPreset) -> None:
        for name in ("tp_size", "pp_size"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, getattr(spec, name))
            elif value != getattr(spec, name) and not spec.parallel_sizes:
                raise ConfigError(f"plugin {spec.name!r} has no {name.replace('_', ' ')}; "
                                  f"use a hybrid_parallel entry")
            elif not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} {value!r} must be a positive integer")
        model_parallel = self.tp_size * self.pp_size
        if self.world_size % model_parallel:
            raise ConfigError(f"world size {self.world_size} is not a multiple of tp*pp = "
                              f"{model_parallel} (plugin {spec.name!r})")
        if preset.num_heads % self.tp_size:
            raise ConfigError(f"tp size {self.tp_size} does not divide {preset.name}'s "
                              f"{preset.num_heads} attention heads")
        if self.pp_size > preset.num_layers:
            raise ConfigError(f"pp size {self.pp_size} exceeds {preset.name}'s {preset.num_layers} layers")
        if self.batch_size % self.pp_size:
            raise ConfigError(f"batch size {self.batch_size} must be a multiple of pp size "
                              f"{self.pp_size} (one microbatch per stage)")

    @property
    def dp_size(self) -> int:
        return self.world_size // (self.tp_size * self.pp_size)

    @property
    def spec(self) -> plugins.PluginSpec:
        """The registry entry with this run's plugin options bound (its `build` passes them on)."""
        return plugins.get(self.plugin).with_options(self.plugin_options)

    @property
    def preset(self) -> model_mod.ModelPreset:
        return model_mod.get_preset(self.model)

    def to_dict(self) -> dict:
        return asdict(self)


def zero_steps_message(train_n: int, batch_size: int, dp_size: int) -> str:
    """An epoch without an optimizer step is an error, never a train_loss of 0 (drop_last=True)."""
    per_rank = math.ceil(train_n / dp_size)  # DistributedSampler pads the shards to equal sizes
    return (f"the train split has {train_n} images, {per_rank} per data-parallel rank ({dp_size} ranks): less "
            f"than one batch of --batch-size {batch_size}, so an epoch would run no optimizer step (the last "
            f"partial batch is dropped); use --batch-size <= {per_rank} or a larger --subset")
