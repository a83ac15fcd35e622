"""Bench modes end to end on CPU, each in its own small run: a kill and --resume mid-matrix, the
option ablation, a world-size list, traces, budget recording. (tests/test_report.py holds the
report and gate checks that read one shared matrix run.)"""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.runs import CPU_BENCH as ALL
from vitcore import ConfigError
from vitcore.gate import budget_files
from vitcore.reporting import analysis
from vitcore.spec.points import key as point_key
from vitcore.store.results import read_points


@pytest.mark.slow
def test_ablation_flips_each_option_once_and_reports_its_effect(tmp_path):
    p = subprocess.run(ALL + ["--plugins", "torch_ddp", "--batch-sizes", "8", "--no-reference",
                                     "--ablate", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    points = read_points(tmp_path / "points.jsonl")
    # on a CPU: attention, gradient checkpointing and the GC freeze (compile and fused Adam need CUDA)
    assert sorted(q["variant"] for q in points) == ["", "attention=eager", "freeze_gc=True",
                                                    "grad_checkpoint=True"]
    assert [q["grad_checkpoint"] for q in points if q["variant"] == "grad_checkpoint=True"] == [True]
    rows = analysis.ablation_rows(points)
    assert len(rows) == 3 and all(r["delta"] is not None and r["base_images_per_s"] > 0 for r in rows)
    table = (tmp_path / "summary.md").read_text()
    assert "grad_checkpoint=True" in table and "attention=eager" in table


@pytest.mark.slow
def test_kill_then_resume_measures_each_point_once(tmp_path):
    # a one-process entry and a two-process one (its gloo workers die with the group)
    out = tmp_path / "b"
    cmd = ALL + ["--plugins", "torch_ddp,hybrid_parallel_tp2", "--batch-sizes", "4,8,16", "--no-reference",
                 "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(read_points(out / "points.jsonl")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_points(out / "points.jsonl")
    assert 2 <= len(before) < 6, "the kill should land mid-matrix"
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    after = read_points(out / "points.jsonl")
    keys = [point_key(x) for x in after]
    assert len(keys) == len(set(keys)) == 6  # 2 entries, 3 batch sizes
    assert after[: len(before)] == before  # finished points kept as they were


@pytest.mark.slow
def test_nproc_list_measures_each_world_size_and_reports_scaling(tmp_path):
    p = subprocess.run(ALL + ["--plugins", "torch_ddp", "--batch-sizes", "8", "--no-reference",
                                     "--nproc", "1,2", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    points = read_points(tmp_path / "points.jsonl")
    assert sorted(q["world_size"] for q in points) == [1, 2]
    rows = analysis.scaling_rows(points)
    assert len(rows) == 1 and rows[0]["world_size"] == 2 and rows[0]["efficiency"] > 0


@pytest.mark.slow
def test_trace_writes_the_top_operators_per_point(tmp_path):
    p = subprocess.run(ALL + ["--plugins", "torch_ddp", "--batch-sizes", "4", "--no-reference",
                                     "--trace", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (trace,) = (tmp_path / "traces").glob("trace-torch_ddp-fp32-fast-ws1-bs4*.txt")
    text = trace.read_text()
    assert "ms/step" in text and "Self CPU" in text and "aten::" in text
    (point,) = read_points(tmp_path / "points.jsonl")
    assert point["trace"] == str(trace) and point["gpu_busy"] is None  # no GPU kernels on a CPU


def test_gpu_busy_counts_each_kernel_once():
    # operator rows and user annotations repeat their kernels' time; only device events count
    from types import SimpleNamespace as E

    from torch.autograd import DeviceType

    from vitcore.measure.profiling import kernel_seconds

    avgs = [E(device_type=DeviceType.CPU, self_device_time_total=60_000, is_user_annotation=False),  # aten::mm
            E(device_type=DeviceType.CUDA, self_device_time_total=100_000, is_user_annotation=True),  # DDP.forward
            E(device_type=DeviceType.CUDA, self_device_time_total=60_000, is_user_annotation=False),  # its kernel
            E(device_type=DeviceType.CUDA, self_device_time_total=40_000, is_user_annotation=False)]
    assert kernel_seconds(avgs) == 0.1


@pytest.mark.slow
def test_update_budgets_records_what_this_run_measured_and_what_the_file_lacks(tmp_path):
    out, folder = tmp_path / "b", tmp_path / "budgets"
    ddp = ALL + ["--plugins", "torch_ddp", "--no-reference", "--out", str(out), "--processes", "3"]
    p = subprocess.run(ddp + ["--batch-sizes", "8,16"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = read_points(out / "points.jsonl")
    budget_files.update(folder, resumed[0])  # one resumed point already has its budget
    p = subprocess.run(ddp + ["--batch-sizes", "4,8,16", "--resume", "--update-budgets", str(folder)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    recorded = sorted(ln.split("|bs")[1].split()[0] for ln in p.stdout.splitlines() if ln.startswith("[vitcore] budget"))
    # bs4 is new; of the resumed bs8 and bs16, only the one without a budget (an interrupted recording)
    assert recorded == sorted({"4", "8", "16"} - {str(resumed[0]["batch_size"])}), p.stdout + p.stderr[-2000:]
    entries = json.loads(next(folder.glob("*.json")).read_text())["entries"]
    assert len(entries) == 3 and all(e["source"]["processes"] == 3 for e in entries.values())


def test_update_budgets_records_three_processes_unless_told_and_refuses_fewer(tmp_path):
    from vitcore.cli import options, typed

    def resolved(*extra):
        args = options.build_parser().parse_args(["bench", "--device", "cpu", "--out", str(tmp_path / "o"), *extra])
        return typed.BenchOptions.from_args(args).processes

    assert resolved() == 1 and resolved("--processes", "2") == 2
    assert resolved("--update-budgets", str(tmp_path / "b")) == budget_files.MIN_RECORD_PROCESSES == 3
    with pytest.raises(ConfigError, match="--processes 2 with --update-budgets: a budget needs at least 3"):
        resolved("--update-budgets", str(tmp_path / "b"), "--processes", "2")
