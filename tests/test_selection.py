"""What `pytest -m gpu --plugin=...` selects, and how GPU tests end on a machine without a GPU."""

import subprocess
import sys

import pytest
import torch

from vitcore.measure import bench, reference
from vitcore.measure.timing import Timing
from vitcore.spec.config import RunConfig
from vitcore.spec.points import key
from vitcore.store.results import read_points


def _pytest(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_plugin_option_selects_only_that_family():
    p = _pytest("tests/test_gpu.py", "-m", "gpu", "--plugin=gemini", "--co", "-q")
    ids = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert ids and all("gemini" in i for i in ids), ids
    assert {i.split("[")[1].split("-")[0] for i in ids} == {"gemini", "gemini_auto", "gemini_offload"}


@pytest.mark.slow
def test_unknown_plugin_option_is_a_usage_error():
    p = _pytest("tests/test_gpu.py", "--plugin=zero9", "--co", "-q")
    assert p.returncode != 0 and "unknown plugin 'zero9'" in (p.stdout + p.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
@pytest.mark.slow
def test_without_a_gpu_every_gpu_test_skips_with_the_reason():
    p = _pytest("tests/test_gpu.py", "-m", "gpu", "--plugin=torch_ddp", "-rs", "-q")
    assert p.returncode == 0, p.stdout[-2000:]
    assert "passed" not in p.stdout.splitlines()[-1]
    assert "needs a CUDA GPU; torch.cuda.is_available() is False" in p.stdout


def test_oom_point_is_a_result_and_the_group_goes_on(monkeypatch, tmp_path, cpu_process_group):
    def fake_measure(cfg, timing):
        if cfg.batch_size == 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return bench.skeleton(cfg, status="ok", images_per_s=100.0 * cfg.batch_size)

    monkeypatch.setattr(bench, "measure", fake_measure)
    cfgs = [RunConfig(plugin="torch_ddp", device="cpu", batch_size=b) for b in (32, 64, 128)]
    out = tmp_path / "points.jsonl"
    points = bench.measure_group(cfgs, Timing(), str(out))
    assert [p["status"] for p in points] == ["ok", "oom", "ok"]
    assert "out of memory" in points[1]["error"]
    assert [p["status"] for p in read_points(out)] == ["ok", "oom", "ok"]


def test_reference_and_plugin_points_share_the_run_loop(monkeypatch, tmp_path, cpu_process_group):
    # a failing reference point is recorded like a plugin's: its own skeleton, family "reference"
    def oom(ref, timing):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(reference, "measure_reference", oom)
    monkeypatch.setattr(bench, "measure", lambda cfg, timing: bench.skeleton(cfg, status="ok"))
    items = [reference.Reference(model="vit-tiny", batch_size=8, device="cpu"),
             RunConfig(plugin="torch_ddp", device="cpu", batch_size=8)]
    points = bench.measure_group(items, Timing(), str(tmp_path / "points.jsonl"))
    assert [(p["plugin"], p["family"], p["status"]) for p in points] == [
        ("reference_eager", "reference", "oom"), ("torch_ddp", "torch_ddp", "ok")]
    assert [bench.group_key([i]) for i in items] == [(key(p),) for p in points]


# --- issue 17: the plugins' own options in the ablation, larger batches, the timm reference -------------
PLUGIN_FLIPS = {  # entry -> (device, the variants `--ablate plugin` measures), typed in
    # the fast profile sets overlap_communication=False (and hybrid flash attention): flipped back to upstream's
    "low_level_zero_s1": ("cuda", ["overlap_communication=True", "reduce_bucket_size_in_m=128"]),
    "gemini": ("cuda", ["enable_async_reduce=False", "max_prefetch=2", "hidden_dim=768", "shard_param_frac=0.0"]),
    "gemini_auto": ("cuda", ["enable_async_reduce=False", "max_prefetch=2", "hidden_dim=768"]),
    # kept-gathered chunks keep their optimizer states on the GPU: shard_param_frac=0.0 would undo the offload
    "gemini_offload": ("cuda", ["enable_async_reduce=False", "max_prefetch=2", "hidden_dim=768"]),
    "hybrid_parallel": ("cuda", ["enable_flash_attention=False", "enable_jit_fused=True"]),
    "hybrid_parallel_tp2": ("cpu", ["enable_jit_fused=True"]),  # ColoAttention's kernels need CUDA
    "torch_ddp": ("cuda", []),
}


@pytest.mark.parametrize("name", PLUGIN_FLIPS)
def test_plugin_ablation_flips_each_own_option_once(name):
    device, expected = PLUGIN_FLIPS[name]
    base = RunConfig(plugin=name, device=device, batch_size=128, world_size=plugins_min_world(name))
    flips = bench.ablations(base, device, "plugin")
    assert [c.variant for c in flips] == expected
    for c in flips:
        option, _, _ = c.variant.partition("=")
        assert c.plugin_options == base.plugin_options | {option: c.plugin_options[option]}
        assert c.plugin_options[option] != base.spec.value(option) and c.spec.settings == tuple(c.plugin_options.items())
        assert (c.attention, c.grad_checkpoint, c.precision) == (base.attention, base.grad_checkpoint, base.precision)
    profile = [c.variant for c in bench.ablations(base, device, "profile")]
    assert all(c.plugin_options == base.plugin_options for c in bench.ablations(base, device, "profile"))
    assert [c.variant for c in bench.ablations(base, device)] == profile + expected


@pytest.mark.parametrize("name,device,profile,options,expect", [
    ("low_level_zero_s1", "cuda", "fast", {}, {"overlap_communication": False}),
    ("low_level_zero_s2", "cuda", "study", {}, {}),  # the study keeps upstream's values
    ("hybrid_parallel", "cuda", "fast", {}, {"enable_flash_attention": True}),
    ("hybrid_parallel", "cpu", "fast", {}, {}),  # ColoAttention needs CUDA: not set on a CPU
    ("hybrid_parallel", "cuda", "fast", {"enable_flash_attention": False}, {"enable_flash_attention": False}),
    ("gemini", "cuda", "fast", {}, {}),  # no Gemini option changed device time (docs/performance.md)
])
def test_the_fast_profile_sets_the_plugin_options_measured_better_and_option_wins(name, device, profile, options, expect):
    cfg = RunConfig(plugin=name, device=device, profile=profile, plugin_options=options, batch_size=8,
                    world_size=plugins_min_world(name))
    assert cfg.plugin_options == expect and dict(cfg.spec.settings) == expect


def plugins_min_world(name):
    from vitcore.spec import plugins

    return plugins.get(name).min_world_size


def test_ablate_takes_only_the_known_modes():
    from vitcore import VitcoreError

    groups, _ = bench.plan(["torch_ddp"], [8], None, profile="fast", model="vit-tiny", device="cpu", ablate="plugin")
    assert [c.variant for c in groups[0]] == [""]  # torch_ddp has no option of its own
    with pytest.raises(VitcoreError, match="unknown ablation 'plugins'; valid: all, profile, plugin"):
        bench.plan(["torch_ddp"], [8], None, profile="fast", model="vit-tiny", device="cpu", ablate="plugins")


def test_a_plugin_option_sets_the_entries_that_have_it_and_skips_the_others():
    groups, skipped = bench.plan(["hybrid_parallel", "torch_ddp"], [8], None, profile="fast", model="vit-tiny",
                                 device="cpu", options={"enable_jit_fused": True, "freeze_gc": True})
    cfgs = [c for g in groups for c in g]  # the family: every hybrid_parallel entry the CPU runs
    assert [c.plugin for c in cfgs] == ["hybrid_parallel", "hybrid_parallel_tp2", "hybrid_parallel_pp2",
                                        "hybrid_parallel_tp2pp2"]
    assert {(c.variant, tuple(c.plugin_options.items()), c.freeze_gc) for c in cfgs} == {
        ("enable_jit_fused=True,freeze_gc=True", (("enable_jit_fused", True),), True)}
    assert {"plugin": "torch_ddp", "precision": None,
            "reason": "plugin 'torch_ddp' has no option 'enable_jit_fused'; its options: none; every entry's step "
                      "options: compile_where, compile_mode, compile_dynamic, compile_backend, sdpa_backend"} in skipped


def test_the_fast_matrix_takes_batch_256_and_512():
    groups, _ = bench.plan(None, [128, 256, 512], None, profile="fast", model="vit-base", device="cpu")
    assert groups and all([c.batch_size for c in g] == [128, 256, 512] for g in groups)
    ref_groups, _ = reference.plan([128, 256, 512], model="vit-base", device="cpu", twins_of=["torch_ddp"])
    assert all([r.batch_size for r in g] == [128, 256, 512] for g in ref_groups)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.19 GiB"),
                                   RuntimeError("CUDA error: out of memory")])  # as colossalai's kernels raise it
@pytest.mark.slow
def test_an_oom_at_512_is_a_result_of_every_kind_of_point(error, monkeypatch, tmp_path, cpu_process_group):
    def fake(item, timing):
        if item.batch_size == 512:
            raise error
        return bench.measurable(item).skeleton(status="ok", images_per_s=float(item.batch_size))

    monkeypatch.setattr(bench, "measure", fake)
    monkeypatch.setattr(reference, "measure_reference", fake)
    items = [RunConfig(plugin="torch_ddp", device="cpu", batch_size=b) for b in (256, 512)] + [
        reference.Reference(model="vit-base", batch_size=b, impl="timm", compile=True, device="cpu") for b in (512, 256)]
    out = tmp_path / "points.jsonl"
    got = [(p["plugin"], p["batch_size"], p["status"]) for p in bench.measure_group(items, Timing(), str(out))]
    assert got == [("torch_ddp", 256, "ok"), ("torch_ddp", 512, "oom"), ("timm_compiled", 512, "oom"),
                   ("timm_compiled", 256, "ok")]
    assert [(p["plugin"], p["batch_size"], p["status"]) for p in read_points(out)] == got


def test_timm_reference_is_planned_on_cuda_where_timm_imports_and_skipped_with_the_reason(monkeypatch):
    _, skipped = reference.plan([128], model="vit-base", device="cpu")
    assert {s["plugin"]: s["reason"] for s in skipped}["timm_compiled"] == reference.TIMM_ON_CPU
    monkeypatch.setattr(reference, "timm_missing", lambda: None)
    groups, skipped = reference.plan([128, 256], model="vit-base", device="cuda")
    assert [g[0].plugin for g in groups] == ["reference_eager", "reference_compiled", "timm_eager", "timm_compiled"]
    assert [[(r.impl, r.batch_size) for r in g] for g in groups[2:]] == [[("timm", 128), ("timm", 256)]] * 2
    assert skipped == []
    monkeypatch.setattr(reference, "timm_missing", lambda: "timm is not importable (ModuleNotFoundError: x)")
    _, skipped = reference.plan([128], model="vit-base", device="cuda")
    assert [(s["plugin"], s["reason"]) for s in skipped] == [
        ("timm_eager", "timm is not importable (ModuleNotFoundError: x)"),
        ("timm_compiled", "timm is not importable (ModuleNotFoundError: x)")]


def test_timm_reference_point_has_the_reference_schema_and_records_the_model(monkeypatch):
    """The timm loop through the reference's own step and point (a stand-in network where timm is
    not importable here: the wiring, not timm's speed, is what a CPU can check)."""
    import torch.nn as nn

    hf = reference.measure_reference(reference.Reference(model="vit-tiny", batch_size=4, device="cpu"), TINY_TIMING)
    if reference.timm_missing():
        monkeypatch.setattr(reference, "timm_model", lambda preset, n: (
            nn.Sequential(nn.Flatten(), nn.Linear(3 * preset.image_size ** 2, n)), "stand-in", {"timm": "stand-in"}))
    p = reference.measure_reference(reference.Reference(model="vit-tiny", batch_size=4, impl="timm", device="cpu"),
                                    TINY_TIMING)
    assert set(p) == set(hf) | {"timm"} and p["plugin"] == "timm_eager" and p["family"] == "reference"
    assert p["images_per_s"] > 0 and p["timm"] and p["weights"] != hf["weights"]


TINY_TIMING = Timing(warmup=1, steps=2, repeats=2, min_window_s=0)


def test_timm_model_is_the_hf_model_at_the_same_sizes():
    reason = reference.timm_missing()
    if reason:
        pytest.skip(reason)
    from vitcore.inputs.model import PRESETS, build_model

    for preset in ("vit-tiny", "vit-base"):
        net, weights, recorded = reference.timm_model(PRESETS[preset], 3)
        hf, _ = build_model(PRESETS[preset], labels=["a", "b", "c"], weights="random")
        assert sum(x.numel() for x in net.parameters()) == sum(x.numel() for x in hf.parameters())
        assert recorded["timm"] in weights and all(b.attn.fused_attn for b in net.blocks)
