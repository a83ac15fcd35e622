"""The step as an entry's compile plan builds it (issue 29; the plan and its options are on the
registry entry: `vitcore.spec.registry.CompilePlan`, `PluginSpec.step_options`).

Compiling is in place (`nn.Module.compile`): the module keeps its class (shardformer looks its policy up
by class) and its state-dict keys (no `_orig_mod.` in checkpoints). torch.compile is lazy: a refusal
shows at the first step, inside the run, and becomes that point's error line (the report's compile
table shows it) rather than a crash of the matrix.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitcore.spec.registry import PluginSpec

_SDPA = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


def inner(boosted):
    """The model as the plugin holds it after boosting (`ModelWrapper.unwrap()`): shardformer's sharded model
    (inside hybrid_parallel's DDP), Gemini's chunked model, the module inside DDP or FSDP. Compiling a DDP
    wrapper in place compiled nothing here (dynamo skips DDP's own forward: 0 graphs, measured on a CPU)."""
    return boosted.unwrap() if hasattr(boosted, "unwrap") else boosted


def kwargs(spec: PluginSpec) -> dict:
    """torch.compile's arguments from the entry's step options (mode only where inductor reads it)."""
    backend = spec.value("compile_backend")
    kw = {"backend": backend, "dynamic": spec.value("compile_dynamic")}
    if backend == "inductor" and spec.value("compile_mode") != "default":
        kw["mode"] = spec.value("compile_mode")
    return kw


def apply(model, spec: PluginSpec, stage: str, enabled: bool):
    """Compile at `stage` ("before" boosting: the model; "after": the boosted wrapper's inner module) where the
    run compiles and the entry's plan (or --option compile_where) says this stage. Returns `model`."""
    if enabled and stage == "before":
        # a fresh cache: dynamo would reuse another model's graphs of the same class in this process (its
        # parameters are graph inputs), and this run's first step must time its own compilation
        torch._dynamo.reset()
    if enabled and spec.value("compile_where") == stage:
        (model if stage == "before" else inner(model)).compile(**kwargs(spec))
    return model


def describe(spec: PluginSpec, enabled: bool) -> str:
    """One token for a point: how its step was compiled ("" eager), e.g. "after/inductor/max-autotune/static"."""
    if not enabled:
        return ""
    plan = "/".join([spec.value("compile_where"), spec.value("compile_backend"), spec.value("compile_mode"),
                     "dynamic" if spec.value("compile_dynamic") else "static"])
    # plugin options the compiled form sets (CompilePlan.plugin_options): its eager twin runs without them
    return plan + "".join(f"+{k}={v}" for k, v in spec.compile.plugin_options)


def graphs() -> int:
    """Graphs dynamo has captured in this process so far (its own counter); 0 where dynamo was never
    loaded, which a count need not load (importing it creates torch's inductor cache folder)."""
    if "torch._dynamo" not in sys.modules:
        return 0
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def breaks() -> dict[str, int]:
    """Why dynamo declined code so far in this process: its own counters of unsupported constructs
    and graph breaks, reason -> count ({} where dynamo was never loaded)."""
    if "torch._dynamo" not in sys.modules:
        return {}
    counters = torch._dynamo.utils.counters
    out: dict[str, int] = {}
    for kind in ("unimplemented", "graph_break"):
        for reason, n in counters[kind].items():
            out[reason] = out.get(reason, 0) + n
    return out


def refusal_since(before: dict[str, int]) -> str:
    """The first line of the reason dynamo gave most often since `before` ("" where it gave none):
    on the H200 torch_fsdp's compiled step captured nothing, and only this counter said why
    ("FSDP with use_orig_params=False")."""
    now = breaks()
    grown = {r: n - before.get(r, 0) for r, n in now.items() if n > before.get(r, 0)}
    if not grown:
        return ""
    return max(grown, key=grown.get).strip().splitlines()[0]


class NothingCompiled(RuntimeError):
    """A compiled run whose dynamo captured no graph: its step ran eager, so no number of it may stand
    for the compiled form (the point records this line as its error)."""


def require_graphs(graphs: int, breaks_before: dict[str, int], plan: str) -> None:
    if graphs == 0:
        why = refusal_since(breaks_before) or "dynamo recorded no reason"
        raise NothingCompiled(f"torch.compile ({plan}) captured no graph, the step ran eager: {why}")


def facts(s) -> dict:
    """What a result says of a session's compilation (vitcore.training.train.Session): the graphs
    captured and, for a compiled run that captured none, dynamo's reason."""
    n = s.compiled_graphs
    return {"compiled_graphs": n, "compile_refusal": refusal_since(s.breaks_before) if s.cfg.compile and n == 0 else ""}


def require(s) -> None:
    """A compiled session that captured no graph raises NothingCompiled (an eager one passes)."""
    if s.cfg.compile:
        require_graphs(s.compiled_graphs, s.breaks_before, describe(s.cfg.spec, True))


def graphs_since(before: int) -> int:
    """Graphs captured since `before` (a compiled run that captured none compiled nothing: the H200's
    torch_fsdp parity came out bit-identical to eager, which such a count tells apart)."""
    return max(graphs() - before, 0)


def sdpa_factory(spec: PluginSpec):
    """A zero-argument callable making the attention-kernel context a step runs in (`sdpa_backend`;
    auto: torch's own choice). Resolved once per session: the step's host time is measured."""
    name = spec.value("sdpa_backend")
    if name == "auto":
        return contextlib.nullcontext
    backend = getattr(SDPBackend, _SDPA[name])
    return lambda: sdpa_kernel(backend)
