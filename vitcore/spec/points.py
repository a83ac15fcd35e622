"""THE point schema: every field a benchmark point carries, declared once.

A field says its unit, what it means (one line: the report's glossary), how it is shown, whether it
is part of the point's identity, and whether and how the regression rule gates it. The CSV header,
the HTML points table, the console table, the glossary, the budget entries and the gate all read
FIELDS; adding a metric is one `register(Field(...))` plus the code that measures it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from vitcore.spec.env import arch_identity, device_identity


@dataclass(frozen=True, kw_only=True)
class Gate:
    """How the regression rule treats a field. `worse` is the direction of a regression ("lower":
    throughput falls; "higher": memory grows); `tolerance` the relative change allowed by default;
    `group` the name `--fail-on` uses (several fields may share one, e.g. allocated and reserved
    memory); `fallback` a field compared instead where either side lacks this one (older points)."""

    group: str
    worse: str
    tolerance: float
    fallback: str | None = None
    label: str = ""  # how a verdict names the metric; the field's name where empty
    samples: str | None = None  # a field of per-window samples: compared statistically (vitcore.gate.stats)
    # portable: a property of the code on an architecture and software stack, not of one GPU or its host
    # (launches, allocated memory: identical on the H100 and the H200); judged against a budget recorded
    # on any GPU of the same arch_key. Otherwise per device (device time, wall time).
    portable: bool = False
    # two_sided: a change in the good direction fails too (fewer launches, less memory: the budget is stale)
    two_sided: bool = False


@dataclass(frozen=True, kw_only=True)
class Field:
    name: str
    unit: str
    description: str
    header: str = ""  # a human column header; the name where empty
    fmt: str = ""  # format spec for floats ("" shows the value as it is); pct: a share shown in %
    suffix: str = ""
    identity: bool = False  # part of what identifies a point (resume, baselines, budget entries)
    kind: type = str  # int fields are compared and aligned as numbers; floats are those with a fmt
    default: object = None  # the identity value of points recorded before the field existed
    gate: Gate | None = None
    csv: bool = True
    table: bool = False  # a column of the HTML points table
    console: int = 0  # width of its column in the console table (0: not shown)
    short: str = ""  # the console column's header
    provenance: bool = False  # recorded with every budget entry (where and how it was measured)
    derived: bool = False  # computed from other points by vitcore.reporting.analysis, not measured

    @property
    def numeric(self) -> bool:
        return self.kind is not str or bool(self.fmt)

    @property
    def title(self) -> str:
        return self.header or self.name

    def format(self, value) -> str:
        """The value as the report shows it: floats by `fmt`, anything else as it is."""
        if value is None:
            return ""
        if isinstance(value, float) and self.fmt:
            return f"{value:{self.fmt}}{self.suffix}"
        return str(value)


# Tolerances from H100 and H200 measurements (docs/gate.md): the sum of kernel durations per step
# reproduced to 0.2-0.6% across processes, launches per step exactly, steady allocated memory within
# 2 MB (of 2-16 GiB) on both GPUs. The whole-run allocated peak (warm-up included) is not an invariant:
# states up to 2.9% apart on the H100 (torch_ddp_fp16 bs128) and 6.1% on the H200 (torch_ddp bs32: 4.968
# in one fresh process, 5.288 in the 3 that recorded it; reports/h200-gate/2026-12-02-79fc853). Reserved memory depends on the allocator's history (+5.9..8.3%
# on unchanged code on the H200): shown, never gated. Wall-clock throughput moved 10-50% with the
# host, so it is compared statistically over per-process medians with a minimum effect of 5%.
# A budget recorded in several processes is a band: the observed range, widened by the tolerance.
THROUGHPUT = Gate(group="throughput", worse="lower", tolerance=0.05, label="images/s",
                  samples="images_per_s_process_medians")
DEVICE_TIME = Gate(group="device_time", worse="higher", tolerance=0.02, label="device ms/step")
LAUNCHES = Gate(group="launches", worse="higher", tolerance=0.0, label="launches/step", portable=True,
                two_sided=True)
STEADY_ALLOCATED = Gate(group="memory", worse="higher", tolerance=0.005, label="steady allocated GiB", portable=True, two_sided=True)

FIELDS: list[Field] = [
    # identity
    Field(name="plugin", console=24, short="plugin", unit="", description="registry entry (vitcore plugins), or the plain-PyTorch reference",
          identity=True, table=True),
    Field(name="family", unit="", description="the Colossal-AI plugin class the entry configures"),
    Field(name="precision", console=6, short="prec", unit="", description="fp32, fp16 or bf16 training", identity=True, table=True),
    Field(name="profile", unit="", description="fast (tuned settings) or study (the original study's)",
          identity=True, table=True),
    Field(name="variant", header="option changed", unit="", description="the option changed from the profile (ablation, --option); empty: none",
          identity=True, default="", table=True),
    Field(name="plugin_options", header="plugin options", unit="", description="the plugin's own options the point "
          "ran with (the fast profile's, e.g. overlap_communication=False, and --option's); budgets and baselines "
          "compare only points run with the same", csv=False),
    Field(name="model", unit="", description="model preset (vit-base: ViT-B/16 at 224 px)", identity=True,
          default="vit-base", table=True),
    Field(name="world_size", header="world size", kind=int, unit="GPUs", description="processes (one GPU each) in the process group",
          identity=True, default=1, table=True),
    Field(name="batch_size", header="batch size", kind=int, console=5, short="bs", unit="images", description="images per step per data-parallel rank",
          identity=True, table=True),
    Field(name="status", unit="", description="ok, oom (a result: the batch does not fit) or error", table=True),
    # measured
    Field(name="images_per_s", header="images/s", console=10, short="img/s", unit="images/s", description="median over timed windows of images per second per GPU",
          fmt=".1f", table=True, gate=THROUGHPUT),
    Field(name="ratio_to_reference", header="× reference", unit="x", description="images/s over the plain-PyTorch reference's at the "
          "same model and batch size in the same run (compiled where measured, else eager)",
          fmt=".2f", suffix="x", table=True, derived=True),
    Field(name="reference", unit="", description="which reference ratio_to_reference divides by", derived=True),
    Field(name="ratio_to_reference_eager", unit="x", description="images/s over the eager reference's", fmt=".2f",
          suffix="x", derived=True),
    Field(name="ratio_to_reference_compiled", unit="x", description="images/s over the compiled reference's",
          fmt=".2f", suffix="x", derived=True),
    Field(name="spread", console=8, short="spread", unit="", description="(max - min) / median of the windows' images/s: the run's own noise",
          fmt=".1%", table=True),
    Field(name="step_time_s", unit="s", description="median seconds per optimizer step", fmt=".1f"),
    Field(name="images_per_s_windows", unit="images/s", description="images/s of every timed window, all "
          "processes pooled", csv=False),
    Field(name="images_per_s_process_medians", unit="images/s", description="the median images/s of each "
          "process: the throughput gate's samples (processes, not windows, are independent)", csv=False),
    Field(name="device_ms_per_step", header="device ms/step", unit="ms", description="sum of GPU kernel durations per step (copies apart), "
          "profiled over a short window after the timed ones; the host cannot perturb it", fmt=".2f",
          table=True, console=9, short="dev ms", gate=DEVICE_TIME),
    Field(name="device_sm_clock_mhz", unit="MHz", description="median SM clock read while the device-time "
          "steps ran: a GPU that lowers its clock under load (power or heat) slows compute-bound kernels", fmt=".0f"),
    Field(name="copy_ms_per_step", unit="ms", description="host<->device copies and memsets per step in that "
          "window: they depend on the host, so they are shown, not gated", fmt=".2f"),
    Field(name="launches_per_step", header="launches/step", unit="launches", description="GPU kernels, copies and memsets per step in "
          "that window; changes only when the code does", fmt=".1f", table=True, gate=LAUNCHES),
    Field(name="host_ms_per_step", header="host ms/step", unit="ms", description="median wall ms per step minus device ms per step: "
          "Python, kernel launches and waits on the host", fmt=".2f", table=True),
    Field(name="first_step_s", header="first step s", unit="s", description="wall seconds of the first optimizer step "
          "(torch.compile's compilation, lazy initialisation): shown apart from the steady throughput", fmt=".2f",
          table=True),
    Field(name="compile_plan", header="compiled", unit="", description="how the step was compiled, where/backend/mode/"
          "shapes (issue 29; empty: eager; each entry's plan: `vitcore plugins`)", table=True),
    Field(name="peak_mem_allocated_gib", header="peak allocated GiB", console=11, short="alloc GiB", unit="GiB", description="peak memory held by tensors, whole run "
          "(warm-up included; shown, not gated: its warm-up states differ by up to 6.1% on unchanged code)",
          fmt=".3f", table=True),
    Field(name="peak_mem_reserved_gib", header="peak reserved GiB", unit="GiB", description="peak memory held by the caching allocator, "
          "whole run", fmt=".3f", table=True),
    Field(name="steady_mem_allocated_gib", unit="GiB", description="peak tensor memory over the timed windows "
          "only (reproduces within 2 MB on every GPU of an architecture; what budgets compare)", fmt=".3f", csv=False,
          gate=STEADY_ALLOCATED),
    Field(name="steady_mem_reserved_gib", unit="GiB", description="peak allocator memory over the timed windows "
          "only: depends on the allocator's history (two states per point seen), so shown, not gated", fmt=".3f",
          csv=False),
    Field(name="observed", unit="", description="each process's value of every budgeted metric (a budget from "
          "several processes is the band they span)", csv=False),
    Field(name="mem_held_at_start_gib", unit="GiB", description="tensor memory still allocated when this point "
          "started: what earlier points of the same process left behind (0 expected; null off CUDA)", fmt=".3f",
          csv=False),
    Field(name="steady_mem_allocated_gib_processes", unit="GiB", description="steady_mem_allocated_gib of each "
          "process (the point keeps their maximum)", csv=False),
    Field(name="mem_lower_bound_gib", header="memory lower bound GiB", unit="GiB", description="model states at the plugin's precisions and "
          "sharding plus activations (vitcore.reporting.memory): no run can need less", fmt=".3f", table=True, derived=True),
    Field(name="mfu", header="MFU", console=7, short="MFU", unit="", description="model FLOP utilisation: images/s x training FLOPs per image / the "
          "GPU's dense bf16 peak", fmt=".1%", table=True),
    Field(name="gpu_busy", header="GPU busy", unit="", description="GPU kernel time / wall time over 5 profiled steps (--trace); "
          "low: the host limits the step", fmt=".1%", table=True),
    # host time per step, explained (issue 29): from the same 5 profiled steps (vitcore.measure.host_profile)
    Field(name="host_profiled_ms_per_step", header="profiled host ms/step", unit="ms", description="wall ms per "
          "step of the 5 profiled steps (--trace; the Python tracer's cost included): the host's time, waits on "
          "the device included", fmt=".2f"),
    Field(name="host_wait_ms_per_step", header="host wait ms/step", unit="ms", description="of those, ms per step "
          "the host was blocked on the device (cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize, "
          "aten::item, aten::_local_scalar_dense; self time)", fmt=".2f"),
    Field(name="host_by_package", unit="ms", description="host self time per step (waits apart) by the package "
          "whose Python function issued it: colossalai, torch, transformers, vitcore, other (--trace)", csv=False),
    Field(name="host_functions", unit="ms", description="the top 8 upstream functions by host self time per step "
          "(each {name, package, ms_per_step}; the suite's own code left out) (--trace)", csv=False),
    Field(name="host_attribution", unit="", description="empty where the split by package and function holds; "
          "else why it is withheld (the profiler did not nest operators under the Python frames that issued them)",
          csv=False),
    # how it was measured
    Field(name="repeats", kind=int, unit="windows", description="timed windows per process", provenance=True),
    Field(name="processes", kind=int, unit="processes", description="separate processes whose windows are pooled "
          "(--processes)", provenance=True),
    Field(name="injected", unit="", description="a test-only injected regression (--inject-device-pct, "
          "--inject-host-pct) with its ms per step; such a point is never a budget"),
    Field(name="steps", kind=int, unit="steps", description="optimizer steps per timed window", provenance=True),
    Field(name="warmup", kind=int, unit="steps", description="untimed steps before the windows", provenance=True),
    Field(name="min_window_s", unit="s", description="shortest timed window (--min-window): more steps per window "
          "where a window would be shorter", provenance=True),
    Field(name="command", unit="", description="the command line that measured the point", provenance=True),
    # where it was measured
    Field(name="device", unit="", description="GPU model, or the CPU", provenance=True),
    Field(name="driver", unit="", description="NVIDIA driver version", csv=False, provenance=True),
    Field(name="torch", unit="", description="PyTorch version", provenance=True),
    Field(name="cuda", unit="", description="CUDA version torch was built with", provenance=True),
    Field(name="gpu_compute_capability", unit="", description="the GPU's compute capability (9.0: Hopper)",
          csv=False, provenance=True),
    Field(name="gpu_sm_count", kind=int, unit="SMs", description="the GPU's streaming multiprocessors",
          csv=False, provenance=True),
    Field(name="colossalai", unit="", description="Colossal-AI version", provenance=True),
    Field(name="transformers", unit="", description="Hugging Face transformers version", provenance=True),
    Field(name="git_sha", unit="", description="commit of this suite that measured the point", provenance=True),
    Field(name="date", unit="", description="when the point was measured (UTC)", provenance=True),
    Field(name="dataset", unit="", description="the data the point trained on", provenance=True),
    Field(name="weights", unit="", description="where the model's weights came from", provenance=True),
    Field(name="error", unit="", description="first line of the error of a failed point"),
]


def register(field: Field) -> Field:
    """Add a field (a new metric); it appears in the CSV, the tables its flags name and the glossary."""
    if any(f.name == field.name for f in FIELDS):
        raise ValueError(f"point field {field.name!r} declared twice")
    FIELDS.append(field)
    return field


def unregister(name: str) -> None:
    FIELDS[:] = [f for f in FIELDS if f.name != name]


def get(name: str) -> Field:
    for f in FIELDS:
        if f.name == name:
            return f
    raise KeyError(f"no point field {name!r}")


def csv_fields() -> list[str]:
    return [f.name for f in FIELDS if f.csv]


def table_fields() -> list[Field]:
    return [f for f in FIELDS if f.table]


def console_fields() -> list[Field]:
    return [f for f in FIELDS if f.console]


def gated(group: str | None = None) -> list[Field]:
    return [f for f in FIELDS if f.gate and (group is None or f.gate.group == group)]


def gate_groups() -> list[str]:
    return list(dict.fromkeys(f.gate.group for f in gated()))


def provenance(point: dict) -> dict:
    return {f.name: point.get(f.name) for f in FIELDS if f.provenance}


# --- identity --------------------------------------------------------------------------------------
def key(p: dict) -> tuple:
    """What identifies a point within one device: resume, baselines and budget entries use it."""
    out = []
    for f in FIELDS:
        if f.identity:
            v = p.get(f.name)
            v = f.default if v is None else v
            out.append(f.kind(v) if f.kind is int else v)
    return tuple(out)


def key_text(p: dict) -> str:
    """The key as budget files spell it: plugin|precision|profile|model|wsN|bsN[|variant]."""
    plugin, precision, profile, variant, model, ws, bs = key(p)
    return f"{plugin}|{precision}|{profile}|{model}|ws{ws}|bs{bs}" + (f"|{variant}" if variant else "")


def device_key(p: dict) -> str:
    """The device a point was measured on (GPU model and count, torch, CUDA): a baseline matches a
    point only on the same device."""
    return device_identity(p)


def arch_key(p: dict) -> str | None:
    """The architecture and software stack a point's portable invariants belong to (env.arch_identity)."""
    return arch_identity(p)


# Each process's value of these is kept (Field "observed"): budgets are the band the processes span, and
# reserved memory's states are shown beside the verdicts.
OBSERVED = ("device_ms_per_step", "launches_per_step", "steady_mem_allocated_gib", "peak_mem_allocated_gib",
            "steady_mem_reserved_gib")


def observed(p: dict) -> dict[str, list[float]]:
    """{metric: each process's value}: the point's own `observed`, else its single values."""
    got = dict(p.get("observed") or {})
    for name in OBSERVED:
        if name not in got and p.get(name) is not None:
            got[name] = [p[name]]
    return got


def portable(group: str) -> bool:
    """Whether every field of a gate group is portable (an undeclared group is not)."""
    fields = gated(group)
    return bool(fields) and all(f.gate.portable for f in fields)


def process_medians(p: dict) -> list[float]:
    """The images/s median of each process a point pooled; points recorded before the field existed
    hold their windows in process order, `repeats` each."""
    if p.get("images_per_s_process_medians"):
        return list(p["images_per_s_process_medians"])
    w, n = p.get("images_per_s_windows") or [], p.get("repeats") or 0
    if not w or not n or len(w) != n * (p.get("processes") or 1):
        return [p["images_per_s"]] if p.get("images_per_s") else []
    return [statistics.median(w[i:i + n]) for i in range(0, len(w), n)]
