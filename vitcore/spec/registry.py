"""The plugin registry's API: PluginSpec, Tunable, register, select (timm's _registry.py beside its
model files). The entries are `vitcore.spec.plugins`, which registers them on import and re-exports
these names; import that module, not this one.

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
import functools
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
    kind: type  # bool, int, float, or str with `choices`
    default: Any  # upstream's default (the plugin's __init__; torch.compile's for target "compile")
    why: str  # what it should do on one GPU, in one line
    upstream: str  # the upstream code it changes, as colossalai/<file>: <function>
    low: float = 0  # smallest valid value of an int or float
    high: float | None = None
    ablate: Any = None
    needs_cuda: bool = False  # its code path fails without CUDA: not flipped on a CPU, not set there by a profile
    fast: Any = None  # the fast profile's value, where an H100 measured it better (docs/performance.md); None: the entry's
    choices: tuple[str, ...] = ()  # the values of a str option
    target: str = "plugin"  # "plugin": a constructor argument the factory gets; "step": vitcore.training.compiled's

    def valid(self) -> str:
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a number"
        return f"{what} in [{self.low:g}, {self.high:g}]" if self.high is not None else f"{what} >= {self.low:g}"

    def parse(self, text: str):
        """The value typed after NAME=, or ConfigError naming the valid values."""
        value: Any = text if self.kind is str else {"true": True, "false": False}.get(text.lower(), text)
        if self.kind in (int, float):
            with contextlib.suppress(ValueError):
                value = self.kind(text)
        self.check(value)
        return value

    def check(self, value) -> None:
        if self.kind is str:
            if value not in self.choices:
                raise ConfigError(f"{self.name} takes {self.valid()}, not {value!r}")
            return
        typed = isinstance(value, bool) if self.kind is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (self.kind is float or isinstance(value, int)))
        if not typed or (self.kind is not bool and not self.low <= value <= (self.high if self.high is not None else value)):
            raise ConfigError(f"{self.name} takes {self.valid()}, not {value!r}")


# --- torch.compile per entry (issue 29) ------------------------------------------------------
# Where each entry compiles, and the options a user sets (`--option compile_mode=...`).
# Compiling is in place (`nn.Module.compile`), so the module keeps its class and its state-dict keys:
# shardformer looks its policy up by the model's class (a `torch.compile` wrapper is an
# `OptimizedModule`, and hybrid_parallel refused it on an H100: "Auto policy for OptimizedModule ... is
# not implemented"), and checkpoints keep names without `_orig_mod.`. `where`:
# - "before": the model is compiled before `booster.boost`, so the plugin's wrapper calls the compiled
#   forward (torch_ddp's DDP, low_level_zero's and FSDP's wrappers);
# - "after": the boosted model's inner module (what shardformer or Gemini produced) is compiled after
#   boosting, for plugins that replace or hook modules while boosting.
# Whether an entry holds parity compiled is measured on the GPU (`PluginSpec.compile.fast` only after it
# passes there); where compile fails, the point is an error carrying the upstream error's first line and
# the report's compile table shows it (measured, not assumed).
COMPILE_WHERE = ("before", "after")


@dataclass(frozen=True, kw_only=True)
class CompilePlan:
    """An entry's compile placement (see the comment above)."""

    where: str = "before"
    why: str = "the plugin's wrapper calls the module it was given: compiling that module compiles the step"
    fast: bool = False
    """Compiled in the fast profile on CUDA: only once its compiled form passed the GPU parity,
    checkpoint and convergence tests (name the run that proved it beside the entry)."""
    plugin_options: tuple[tuple[str, Any], ...] = ()
    """The entry's own options a compiled run sets, unless the run sets them itself: what its
    compiled form needs from the plugin (torch_fsdp: use_orig_params)."""

    def __post_init__(self):
        if self.where not in COMPILE_WHERE:
            raise ValueError(f"compile where {self.where!r}; valid: {', '.join(COMPILE_WHERE)}")


_COMPILE = "torch/__init__.py: compile"
# One set for every entry (registry.register appends it; compile_where takes the entry's plan.where).
COMPILE_OPTIONS = (
    Tunable(name="compile_where", kind=str, default="before", choices=COMPILE_WHERE, target="step",
            why="before boosting (the plugin wraps the compiled module) or after (the boosted inner module)",
            upstream=_COMPILE),
    Tunable(name="compile_mode", kind=str, default="default", target="step",
            choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
            why="inductor's mode: reduce-overhead adds CUDA graphs (fewer launches, host time), max-autotune "
                "benchmarks GEMM configurations at compile time", upstream=_COMPILE),
    Tunable(name="compile_dynamic", kind=bool, default=False, target="step",
            why="the benchmark's batch never changes shape: static shapes specialise; evaluation's last batch "
                "recompiles once", upstream=_COMPILE),
    Tunable(name="compile_backend", kind=str, default="inductor", choices=("inductor", "aot_eager", "eager"),
            target="step", why="inductor generates kernels; aot_eager and eager trace without code generation "
                                  "(graph breaks and refusals in seconds, on a CPU too)", upstream=_COMPILE),
    Tunable(name="sdpa_backend", kind=str, default="auto", target="step",
            choices=("auto", "flash", "efficient", "cudnn", "math"),
            why="which scaled-dot-product attention kernel the step may use (auto: torch's choice); applies "
                "eager or compiled", upstream="torch/nn/attention/__init__.py: sdpa_kernel"),
)


@functools.cache  # CompilePlan is frozen: one tuple per plan, not one per PluginSpec.value() lookup
def options_for(plan: CompilePlan) -> tuple[Tunable, ...]:
    """The compile options of an entry: the shared set, `compile_where` defaulting to its plan's."""
    return tuple(dataclasses.replace(t, default=plan.where) if t.name == "compile_where" else t
                 for t in COMPILE_OPTIONS)


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
    # Family facts: vitcore.reporting.memory's lower bound and vitcore.measure.reference's twin read these, so a new
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
    """Precision of the entry's hand-written twin (vitcore.measure.reference.bare_loop); None: no twin."""
    tunables: tuple[Tunable, ...] = ()
    """The plugin's own tuning options (issue 17), each at the entry's value unless a run sets it."""
    compile: CompilePlan = field(default_factory=CompilePlan)
    """Where torch.compile applies to this entry (issue 29); its options are `step_options`."""
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

    @property
    def step_options(self) -> tuple[Tunable, ...]:
        """The options of how the step is built and run (torch.compile, SDPA): not the plugin's arguments."""
        return options_for(self.compile)

    def step_problem(self, *, cuda: bool, compiled: bool) -> str | None:
        """Why this run's step options cannot run here (one line), or None: checked before any measurement."""
        if not cuda and self.value("sdpa_backend") in ("flash", "efficient", "cudnn"):
            return f"sdpa_backend={self.value('sdpa_backend')} needs CUDA; valid on a CPU: auto, math"
        if not cuda and compiled and self.value("compile_mode") == "reduce-overhead":
            return "compile_mode=reduce-overhead records CUDA graphs and needs CUDA; valid on a CPU: default"
        return None

    def tunable(self, name: str) -> Tunable:
        found = next((t for t in self.tunables + self.step_options if t.name == name), None)
        if found is not None:
            return found
        raise ConfigError(f"plugin {self.name!r} has no option {name!r}; its options: "
                          f"{', '.join(t.name for t in self.tunables) or 'none'}; every entry's step options: "
                          f"{', '.join(t.name for t in self.step_options)}")

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
        own = {t.name for t in self.tunables}  # the step's options are not the constructor's
        return self.factory(dataclasses.replace(ctx, plugin_options={k: v for k, v in self.settings if k in own}))


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


def settable() -> dict[str, Tunable]:
    """What `--option NAME=VALUE` may name besides the profile's options: the plugins' own and the step's."""
    return tunables() | {t.name: t for t in COMPILE_OPTIONS}


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
