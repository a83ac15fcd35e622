"""The command line's options as typed objects, one per command (the gate's shared by three), each
built once by its `from_args`, the one place that reads the argparse namespace, and validated on
construction: a bad value is one ConfigError line naming it and the valid choices, before any heavy
import. Every other function of the command line takes these objects. A field is named as its
option's dest, so that an option is one `add_argument` (vitcore.cli.options) and one field here;
checks that need the world (files, folders, the dataset) are vitcore.cli.preflight's. Light: no torch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from vitcore import ConfigError, VitcoreError
from vitcore.gate import budgets
from vitcore.gate.budget_files import MIN_RECORD_PROCESSES
from vitcore.inputs.model import PRESETS
from vitcore.spec import plugins
from vitcore.spec.config import PROFILES, RunConfig, parse_options

DEVICES = ("auto", "cuda", "cpu")


def _from(cls, args, **given):
    """`cls` from the namespace's entries named as its fields, and `given` (nested objects, fields
    another command's parser lacks). A field without an option is a KeyError: a test builds each."""
    values = vars(args)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.init and f.name not in given},
               **given)


class _FromNamespace:
    """A command's options read from its namespace by field name (_from); a class whose options need
    nested objects or renamed fields overrides from_args."""

    @classmethod
    def from_args(cls, args):
        return _from(cls, args)


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # a frozen dataclass's parsed or resolved field, in __post_init__


@dataclass(frozen=True)
class GateOptions:
    """The gate (docs/gate.md): bench's --compare and report's --baseline (one dest), and --fail-on
    (ab's too), resolved here once."""

    baseline: str | None
    fail_on: str | None
    allow_missing: bool
    strict: bool
    until_decided: int  # bench's; 0 for report and ab
    tolerances: dict = field(init=False)  # --fail-on over the schema's tolerances

    def __post_init__(self):
        _at_least("--until-decided", self.until_decided, 0)
        _set(self, "tolerances", budgets.fail_on_tolerances(self.fail_on))
        if self.until_decided and not self.baseline:
            raise ConfigError(f"--until-decided {self.until_decided} needs --compare BASELINE (it re-measures the "
                              "points whose verdict against it is inconclusive)")

    @classmethod
    def from_args(cls, args, **given) -> GateOptions:
        return _from(cls, args, **given)


@dataclass(frozen=True)
class BenchOptions:
    """`vitcore bench`. `processes` is resolved: --processes, else 1, or MIN_RECORD_PROCESSES when
    recording budgets (a budget is the band fresh processes span)."""

    plugins: list[str] | None
    precisions: list[str] | None
    batch_sizes: list[int]
    profile: str  # as typed; `profiles` parsed
    model: str | None  # None: by the device (default_model), once torch may be imported
    device: str
    nproc: list[int]
    reference: bool
    ablate: str | None
    options: list[str]  # --option NAME=VALUE as typed; `set_options` parsed
    warmup: int
    steps: int
    repeats: int
    min_window: float
    processes: int | None
    trace: bool
    timeout: float
    finetune: bool
    finetune_epochs: int | None
    dataset: str | None
    out: str
    resume: bool
    json: bool
    verbose: bool
    budgets: str
    update_budgets: str | None
    allow_invariant_change: bool
    inject_device_pct: float
    inject_host_pct: float
    gate: GateOptions
    profiles: tuple[str, ...] = field(init=False)
    set_options: dict = field(init=False)

    def __post_init__(self):
        _set(self, "profiles", tuple(x.strip() for x in self.profile.split(",")))
        _choices("--profile", self.profiles, PROFILES)
        self._recording()
        if self.model is not None:
            _choices("--model", [self.model], PRESETS)
        _choices("--device", [self.device], DEVICES)
        if self.plugins is not None:
            if not self.plugins:
                raise ConfigError(f"--plugins names no plugin; valid: {plugin_choices()} (or leave it out for all)")
            plugins.select(self.plugins)
        if self.precisions is not None:
            _choices("--precisions", self.precisions or [""], plugins.PRECISIONS)
        _positive_ints("--batch-sizes", self.batch_sizes)
        _positive_ints("--nproc", self.nproc)
        for flag, value, low in (("--warmup", self.warmup, 0), ("--steps", self.steps, 1),
                                 ("--repeats", self.repeats, 1), ("--processes", self.processes, 1),
                                 ("--finetune-epochs", self.finetune_epochs, 1)):
            if value is not None:
                _at_least(flag, value, low)
        _non_negative("--min-window", self.min_window, "seconds")
        _non_negative("--inject-device-pct", self.inject_device_pct, "percent")
        _non_negative("--inject-host-pct", self.inject_host_pct, "percent")
        _positive("--timeout", self.timeout, "seconds")
        if self.inject_device_pct and self.device == "cpu":
            raise ConfigError("--inject-device-pct needs --device cuda or auto on a GPU (it adds GPU kernel time)")
        if self.dataset is not None and not self.finetune:
            raise ConfigError(f"--dataset {self.dataset!r} is the fine-tuning's data and needs --finetune "
                              "(throughput is timed on random tensors); add --finetune or leave --dataset out")
        _set(self, "set_options", parse_options(self.options))

    def _recording(self) -> None:
        recording = self.update_budgets
        if self.processes is None:
            _set(self, "processes", MIN_RECORD_PROCESSES if recording else 1)
        elif recording and self.processes < MIN_RECORD_PROCESSES:
            raise ConfigError(f"--processes {self.processes} with --update-budgets: a budget needs at least "
                              f"{MIN_RECORD_PROCESSES} fresh processes (the band they span); leave --processes out")
        if self.allow_invariant_change and not recording:
            raise ConfigError("--allow-invariant-change needs --update-budgets FOLDER (it lets a recording replace "
                              "another device's invariants)")

    def timing(self):
        """How each point is timed: a vitcore.measure.timing.Timing."""
        # timing imports torch: only once the options are valid
        from vitcore.measure.timing import Timing

        return Timing(warmup=self.warmup, steps=self.steps, repeats=self.repeats, min_window_s=self.min_window,
                      trace_dir=os.path.join(self.out, "traces") if self.trace else None,
                      inject_device_pct=self.inject_device_pct, inject_host_pct=self.inject_host_pct)

    @classmethod
    def from_args(cls, args) -> BenchOptions:
        return _from(cls, args, gate=GateOptions.from_args(args))


@dataclass(frozen=True)
class ReportOptions:
    """`vitcore report`."""

    results: list[str]
    out: str
    budgets: str
    skip_bad: bool
    history: tuple[str, ...]  # --history, repeatable; () without one (preflight.check_history reads each)
    markdown: bool
    gate: GateOptions

    def __post_init__(self):
        _set(self, "history", tuple(self.history or ()))

    @classmethod
    def from_args(cls, args) -> ReportOptions:
        return _from(cls, args, gate=GateOptions.from_args(args, until_decided=0))


@dataclass(frozen=True)
class TrainOptions:
    """`vitcore train`: the run (RunConfig validates itself) and where its history goes."""

    config: RunConfig
    out: str | None  # the history JSON; its log beside it

    def __post_init__(self):
        _at_least("--nproc", self.config.world_size, 1)
        _positive("--timeout", self.config.timeout_s, "seconds")

    @classmethod
    def from_args(cls, args) -> TrainOptions:
        """RunConfig's fields are not all the options' dests (--nproc is world_size). It imports torch
        to ask whether CUDA is here where the device may be CUDA: the caller quiets it."""
        cfg = RunConfig(plugin=args.plugin, precision=args.precision, profile=args.profile,
                        model=args.model or default_model(args.device), dataset=args.dataset,
                        weights=args.weights, subset=args.subset, batch_size=args.batch_size, epochs=args.epochs,
                        max_steps_per_epoch=args.max_steps_per_epoch, lr=args.lr, seed=args.seed,
                        attention=args.attention, tp_size=args.tp_size, pp_size=args.pp_size,
                        world_size=args.nproc, device=args.device, checkpoint_dir=args.checkpoint_dir,
                        timeout_s=args.timeout)
        return cls(config=cfg, out=args.out)


@dataclass(frozen=True)
class AbOptions:
    """`vitcore ab`; the head's bench command line is checked by bench's own options (ab.check)."""

    base: str | None
    base_tree: str | None
    head_tree: str | None
    plugins: list[str]
    batch_sizes: list[int]
    model: str | None
    device: str
    processes: int
    warmup: int
    steps: int
    repeats: int
    min_window: float
    timeout: float
    out: str
    inject_host_pct: float
    inject_device_pct: float
    gate: GateOptions  # --fail-on alone

    def __post_init__(self):
        low = budgets.MIN_PROCESSES
        if self.processes < low:
            raise VitcoreError(f"--processes {self.processes}: wall time is decided at 99% only with {low} or more "
                               f"processes a side (the exact U test); give --processes {low} or more")

    @classmethod
    def from_args(cls, args) -> AbOptions:
        return _from(cls, args, gate=GateOptions.from_args(args, baseline=None, allow_missing=False, strict=False,
                                                           until_decided=0))


@dataclass(frozen=True)
class PluginsOptions(_FromNamespace):
    device: str  # the device 'runs here' is judged for

    def __post_init__(self):
        _choices("--device", [self.device], DEVICES)


@dataclass(frozen=True)
class EnvOptions(_FromNamespace):
    budgets: str


@dataclass(frozen=True)
class PretrainOptions(_FromNamespace):
    """`vitcore pretrain`: the stand-in checkpoint's folder, preset, device and epochs (docs/data.md)."""

    out: str
    model: str | None  # None: by the device (default_model)
    device: str
    epochs: int | None  # None: the preset's pretraining recipe

    def __post_init__(self):
        _choices("--device", [self.device], DEVICES)
        if self.model is not None:
            _choices("--model", [self.model], PRESETS)
        if self.epochs is not None:
            _at_least("--epochs", self.epochs, 1)


OPTIONS = {"train": TrainOptions, "bench": BenchOptions, "report": ReportOptions, "plugins": PluginsOptions,
           "env": EnvOptions, "ab": AbOptions, "pretrain": PretrainOptions}


def default_model(device: str) -> str:
    """--model's default: vit-base on a GPU, vit-tiny on a CPU."""
    if device not in ("auto", "cuda"):  # cpu, or a bad value RunConfig names
        return "vit-tiny"
    # torch (2.4 s): only when no --model was given
    import torch

    return "vit-base" if torch.cuda.is_available() else "vit-tiny"


# --- values -----------------------------------------------------------------------------------------
def _choices(flag: str, values, valid) -> None:
    for v in values:
        if v not in valid:
            raise ConfigError(f"{flag}: unknown value {v!r}; valid: {', '.join(map(str, valid))}")


def _positive_ints(flag: str, values) -> None:
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{flag} {','.join(map(str, values)) or repr('')}: expected positive integers, "
                          "comma-separated (e.g. 8,32)")


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{flag} {value} is out of range; valid: an integer >= {low}")


def _positive(flag: str, value: float, unit: str) -> None:
    if not value > 0:
        raise ConfigError(f"{flag} {value} must be > 0 {unit}")


def _non_negative(flag: str, value: float, unit: str) -> None:
    if not value >= 0:
        raise ConfigError(f"{flag} {value} must be >= 0 {unit}")


def plugin_choices() -> str:
    families = sorted({s.family for s in plugins.REGISTRY.values()})
    return f"names {', '.join(plugins.REGISTRY)}; families {', '.join(families)}"
