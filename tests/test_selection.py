"""What `pytest -m gpu --plugin=...` selects, and how GPU tests end on a machine without a GPU."""

import subprocess
import sys

import pytest
import torch

from vitcore import bench, reference
from vitcore.config import RunConfig
from vitcore.points import key
from vitcore.results import read_points
from vitcore.timing import Timing


def _pytest(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=300)


def test_plugin_option_selects_only_that_family():
    p = _pytest("tests/test_gpu.py", "-m", "gpu", "--plugin=gemini", "--co", "-q")
    ids = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert ids and all("gemini" in i for i in ids), ids
    assert {i.split("[")[1].split("-")[0] for i in ids} == {"gemini", "gemini_auto", "gemini_offload"}


def test_unknown_plugin_option_is_a_usage_error():
    p = _pytest("tests/test_gpu.py", "--plugin=zero9", "--co", "-q")
    assert p.returncode != 0 and "unknown plugin 'zero9'" in (p.stdout + p.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
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
