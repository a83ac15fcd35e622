"""torch.compile per plugin (issue 29) on the CPU: each entry's plan and options, compiled training that
matches eager, the refusal path (a plugin whose compile fails is a point's error line, not a crash),
and the report's compile columns. The GPU side: `pytest -m gpu --compile` (docs/performance.md)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.runs import run
from vitcore import ConfigError
from vitcore.reporting.compiled import compile_rows, compile_table
from vitcore.spec import plugins
from vitcore.spec.checks import compare, require
from vitcore.spec.config import RunConfig, parse_options

STEP_OPTIONS = ["compile_where", "compile_mode", "compile_dynamic", "compile_backend", "sdpa_backend"]
# The CPU runs these with the tracing-only backend: inductor's C++ compilation takes minutes here.
TRACE_ONLY = {"compile_backend": "aot_eager"}


@pytest.mark.parametrize("entry", list(plugins.REGISTRY.values()), ids=lambda s: s.name)
def test_every_entry_has_a_compile_plan_and_the_step_options(entry):
    assert [t.name for t in entry.step_options] == STEP_OPTIONS
    assert entry.value("compile_where") == entry.compile.where in ("before", "after")
    assert entry.compile.why
    assert not entry.compile.fast, "compiled in the fast profile before its GPU parity run is committed"


def test_the_factory_never_receives_the_step_options():
    seen = {}
    spec = dataclasses.replace(plugins.get("low_level_zero_s1"), factory=lambda ctx: seen.update(ctx.plugin_options))
    spec.with_options({"compile_mode": "max-autotune", "sdpa_backend": "math",
                       "reduce_bucket_size_in_m": 64}).build(plugins.BuildContext(precision="bf16"))
    assert seen == {"reduce_bucket_size_in_m": 64}


@pytest.mark.parametrize("pair,needle", [
    ("compile_backend=tvm", "compile_backend takes one of inductor, aot_eager, eager, not 'tvm'"),
    ("compile_mode=fastest", "compile_mode takes one of default, reduce-overhead"),
    ("compile_dynamic=maybe", "compile_dynamic takes true or false"),
])
def test_a_bad_step_option_is_one_line_naming_the_choices(pair, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_options([pair])


@pytest.mark.parametrize("options,needle", [
    ({"sdpa_backend": "flash"}, "sdpa_backend=flash needs CUDA; valid on a CPU: auto, math"),
    ({"compile_mode": "reduce-overhead"}, "compile_mode=reduce-overhead records CUDA graphs"),
])
def test_cuda_only_step_options_are_refused_on_a_cpu_before_any_run(options, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig(plugin="torch_ddp", device="cpu", compile=True, plugin_options=options)


def test_the_fast_profile_compiles_only_entries_admitted_on_cuda():
    assert RunConfig(plugin="torch_ddp", device="cpu").compile is False
    admitted = dataclasses.replace(plugins.get("torch_ddp"), compile=plugins.CompilePlan(fast=True))
    plugins.REGISTRY["torch_ddp"], saved = admitted, plugins.REGISTRY["torch_ddp"]
    try:
        assert RunConfig(plugin="torch_ddp", device="cpu").compile is False  # no CUDA: eager
        assert RunConfig(plugin="torch_ddp", device="cpu", compile=True).compile is True
    finally:
        plugins.REGISTRY["torch_ddp"] = saved


# the CPU-runnable single-process entries, one per compile placement: torch_ddp before boosting,
# hybrid_parallel after (shardformer's model inside its DDP)
K = dict(model="vit-tiny", batch_size=8, epochs=1, max_steps_per_epoch=4, lr=1e-3, precision="fp32", subset=120)


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["torch_ddp", "hybrid_parallel"])
def test_compiled_training_computes_what_eager_computes(plugin):
    eager = run(plugin=plugin, **K)
    got = run(plugin=plugin, compile=True, plugin_options=TRACE_ONLY, **K)
    assert got["compile_plan"].startswith(plugins.get(plugin).compile.where + "/aot_eager")
    assert eager["compile_plan"] == "" and eager["compiled_graphs"] == 0
    assert got["compiled_graphs"] >= 1  # the comparison below compares a compiled step
    print(require(compare(f"{plugin} compiled per-step loss", eager["step_loss"], got["step_loss"], "fp32")))
    print(require(compare(f"{plugin} compiled eval loss", [eager["epochs"][-1]["eval_loss"]],
                          [got["epochs"][-1]["eval_loss"]], "fp32")))


@pytest.mark.slow
def test_a_compiled_step_is_traced_and_keeps_the_models_names():
    """In-place compile: dynamo captured the forward (so the comparison above compared a compiled step),
    and the state dict has no `_orig_mod.` prefix (checkpoints stay loadable eager)."""
    from tests.support import workers
    from vitcore.processes import launch

    cfg = RunConfig(plugin="hybrid_parallel", device="cpu", compile=True, plugin_options=TRACE_ONLY,
                    model="vit-tiny", batch_size=4, precision="fp32")
    graphs, keys = launch.run(workers.compiled_graphs_and_keys, cfg, device="cpu")[0]
    assert graphs >= 1
    assert keys and not any("_orig_mod" in k for k in keys)


def _point(plugin, compiled, status="ok", ips=100.0, dev=10.0, **kw):
    return {"plugin": plugin, "precision": "fp32", "profile": "fast", "model": "vit-tiny", "batch_size": 8, "world_size": 1,
            "device": "NVIDIA H200", "gpu_name": "NVIDIA H200",
            "status": status, "images_per_s": ips if status == "ok" else None, "device_ms_per_step": dev,
            "compile": compiled, "variant": "compile=True" if compiled else "", "first_step_s": 9.0 if compiled else 0.5,
            "compile_plan": "before/inductor/default/static" if compiled else ""} | kw


def test_the_compile_table_shows_the_speed_up_and_a_refusal_with_its_upstream_line():
    line = "NotImplementedError: Auto policy for OptimizedModule (torch._dynamo.eval_frame) is not implemented"
    points = [_point("torch_ddp", False), _point("torch_ddp", True, ips=130.0, dev=8.0),
              _point("hybrid_parallel", False), _point("hybrid_parallel", True, status="error", error=line)]
    rows = {r["plugin"]: r for r in compile_rows(points)}
    assert rows["torch_ddp"]["speedup"] == pytest.approx(1.3) and rows["torch_ddp"]["device_ratio"] == pytest.approx(0.8)
    assert rows["hybrid_parallel"]["speedup"] is None
    table = compile_table(points)
    assert "| torch_ddp | fp32 | 8 | before/inductor/default/static | 100.0 | 130.0 | 1.30x | 10.00 / 8.00 | 0.5 / 9.0 | ok |" in table
    assert f"error: {line}" in table
    assert compile_table([_point("torch_ddp", False)]).startswith("(no compiled points")


@pytest.mark.slow
def test_a_plugin_whose_compile_fails_is_a_point_with_the_error_and_the_matrix_goes_on(monkeypatch):
    """The refusal path through the real measurement loop: compile raises inside the first point's
    setup (as shardformer raised on an H100), the point records the first line, the next point runs."""
    from vitcore.measure import bench
    from vitcore.measure.timing import Timing
    from vitcore.processes import launch
    from vitcore.training import compiled

    def refuse(model, spec, stage, enabled):
        if enabled and stage == "before":
            raise NotImplementedError("Auto policy for OptimizedModule is not implemented\n(upstream detail)")
        return model

    monkeypatch.setattr(compiled, "apply", refuse)
    base = dict(plugin="torch_ddp", device="cpu", model="vit-tiny", batch_size=4, precision="fp32")
    items = [RunConfig(compile=True, variant="compile=True", **base), RunConfig(**base)]
    got = launch.run(bench.measure_group, items, Timing(warmup=1, steps=2, repeats=2, min_window_s=0), None,
                     device="cpu")[0]
    assert [p["status"] for p in got] == ["error", "ok"]
    assert got[0]["error"] == "NotImplementedError: Auto policy for OptimizedModule is not implemented"
    assert got[0]["compile"] is True and got[0]["compile_plan"].startswith("before/")
    assert "error: NotImplementedError: Auto policy" in compile_table(got)


def test_the_report_carries_the_compile_table():
    from vitcore.reporting import report

    points = [_point("torch_ddp", False), _point("torch_ddp", True, ips=130.0, dev=8.0)]
    assert "### torch.compile per entry" in report.summary_markdown(points)
    assert "1.30x" in report.summary_markdown(points)
    assert "torch.compile per entry, eager beside compiled" in report.html_report(points)


def test_dynamos_reason_for_compiling_nothing_is_read_off_its_counters():
    """The H200's torch_fsdp case, injected: a module FSDP manages without use_orig_params. dynamo
    refuses to trace it (real dynamo, tracing-only backend) and captures no graph; the reason it
    gives is what a compiled run records."""
    import torch

    from vitcore.training import compiled

    class Outer(torch.nn.Module):  # defined here: dynamo skips frames of torch's own modules
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(x).relu()

    outer = Outer()
    for m in outer.modules():  # the flags FSDP sets on the modules it manages
        m._is_fsdp_managed_module, m._fsdp_use_orig_params = True, False
    graphs, before = compiled.graphs(), compiled.breaks()
    outer.compile(backend="eager")
    outer(torch.randn(2, 4))
    assert compiled.graphs_since(graphs) == 0
    assert compiled.refusal_since(before) == "FSDP with use_orig_params=False"
    with pytest.raises(compiled.NothingCompiled, match="captured no graph, the step ran eager: FSDP with use_orig_params"):
        compiled.require_graphs(0, before, "after/eager/default/static")
    compiled.require_graphs(1, before, "after/eager/default/static")  # a captured graph passes
    assert compiled.refusal_since(compiled.breaks()) == ""  # nothing new since now


@pytest.mark.slow
def test_a_compiled_point_that_captures_no_graph_is_an_error_not_an_eager_number(monkeypatch):
    """Through the real measurement loop: compile is asked for and silently does nothing (as FSDP
    without use_orig_params did on the H200, at eager speed); the point is an error, not a compiled number."""
    from vitcore.measure import bench
    from vitcore.measure.timing import Timing
    from vitcore.processes import launch
    from vitcore.training import compiled

    monkeypatch.setattr(compiled, "apply", lambda model, spec, stage, enabled: model)  # compiles nothing
    base = dict(plugin="torch_ddp", device="cpu", model="vit-tiny", batch_size=4, precision="fp32")
    items = [RunConfig(compile=True, variant="compile=True", plugin_options=TRACE_ONLY, **base), RunConfig(**base)]
    got = launch.run(bench.measure_group, items, Timing(warmup=1, steps=2, repeats=2, min_window_s=0), None,
                     device="cpu")[0]
    assert [p["status"] for p in got] == ["error", "ok"]
    assert got[0]["error"].startswith("NothingCompiled: torch.compile (before/aot_eager/default/static) captured no graph")
    assert got[0]["images_per_s"] is None


def test_torch_fsdp_compiled_sets_use_orig_params_and_a_run_may_override_it():
    on = RunConfig(plugin="torch_fsdp", device="cuda", compile=True, precision="bf16")
    assert on.plugin_options == {"use_orig_params": True}
    assert RunConfig(plugin="torch_fsdp", device="cuda", precision="bf16").plugin_options == {}  # eager: FSDP's default
    off = RunConfig(plugin="torch_fsdp", device="cuda", compile=True, precision="bf16",
                    plugin_options={"use_orig_params": False})
    assert off.plugin_options == {"use_orig_params": False}
    from tests.support import workers
    from vitcore.processes import launch

    eager = RunConfig(plugin="torch_fsdp", device="cuda", precision="bf16")
    # what TorchFSDPPlugin passes to FSDP (built under a one-process gloo group: the plugin asks for one)
    assert launch.run(workers.fsdp_use_orig_params, [on, off, eager], device="cpu")[0] == [True, False, None]  # eager: FSDP's own default


def test_a_compile_plans_plugin_options_are_the_entrys_own_and_its_plan_names_them():
    with_options = [s for s in plugins.REGISTRY.values() if s.compile.plugin_options]
    assert [s.name for s in with_options] == ["torch_fsdp"]
    for spec in with_options:
        for option, value in spec.compile.plugin_options:
            spec.tunable(option).check(value)
    # the compile table's "compiled as" shows what the eager twin runs without
    assert plugins.get("torch_fsdp").compile.plugin_options == (("use_orig_params", True),)
    from vitcore.training import compiled
    assert compiled.describe(plugins.get("torch_fsdp"), True) == "after/inductor/default/static+use_orig_params=True"
    assert compiled.describe(plugins.get("torch_ddp"), True) == "before/inductor/default/static"


@pytest.mark.slow
def test_vitcore_train_says_when_its_compiled_run_trained_eager(monkeypatch, tmp_path):
    """A compiled training run whose dynamo captured nothing still trains (its history records
    compiled_graphs 0 and the reason), and the console says so in one line rather than nothing."""
    import functools

    from tests.support import cli
    from vitcore.cli import typed
    from vitcore.training import compiled

    monkeypatch.setattr(typed, "RunConfig", functools.partial(RunConfig, compile=True, plugin_options=TRACE_ONLY))
    monkeypatch.setattr(compiled, "apply", lambda model, spec, stage, enabled: model)  # compiles nothing
    rc, err = cli.run("train", "--device", "cpu", "--model", "vit-tiny", "--dataset", "embedded", "--subset", "48",
                              "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8",
                              "--out", str(tmp_path / "h.json"))
    assert rc == 0, err
    assert "warning: torch.compile captured no graph, so this run trained eager: dynamo recorded no reason" in err
