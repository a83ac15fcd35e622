"""The worker pool (vitcore/processes/worker_pool.py) on CPU, through the code path the GPU tier uses (the
device is a parameter): start-up paid once, every case isolated, a crashing or hanging case fails
alone and the next case runs in a new worker, and a pooled case computes bit for bit what a fresh
launch.spawn process computes, for several plugins in sequence in one worker. And how the GPU tier's
processes share the GPU and their results (tests/support, the root conftest)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import workers
from tests.support.gpu import computed_once, gpu_share, session_dir
from tests.support.processes import alive
from tests.support.runs import PARITY, PARITY_STEPS
from vitcore import VitcoreError
from vitcore.processes import launch, worker_pool
from vitcore.processes.launch import WorkerError
from vitcore.processes.worker_pool import WorkerPool
from vitcore.spec.config import RunConfig
from vitcore.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with WorkerPool("cpu", log_dir=tmp_path_factory.mktemp("pool-logs")) as p:
        yield p


def _timed(pool, fn, *args, timeout_s=120.0):
    t0 = time.monotonic()
    out = pool.run(fn, args, timeout_s=timeout_s)
    return out, time.monotonic() - t0


@pytest.mark.slow
def test_the_worker_is_reused_and_a_second_case_does_not_pay_the_imports(pool):
    (pid1, world1), first = _timed(pool, workers.pid_and_world)
    (pid2, world2), second = _timed(pool, workers.pid_and_world)
    print(f"worker start-up (imports, measured in the worker) {pool.startup_s:.1f} s; first case "
          f"{first:.2f} s (start-up included), second case {second:.2f} s")
    assert pid1 == pid2 == pool.pid and world1 == world2 == 1
    # the second case includes a new process group, not the imports (12 s on a 2-core CPU, measured)
    assert second < pool.startup_s / 4 and second < first / 4


def test_a_raising_case_fails_with_its_first_line_and_the_worker_stays(pool):
    pid = pool.run(workers.pid_and_world, timeout_s=120)[0]
    with pytest.raises(WorkerError) as e:
        pool.run(workers.raises_two_lines, timeout_s=120)
    assert str(e.value) == (f"case raises_two_lines failed: ValueError: boom in the case; "
                            f"traceback: {e.value.log}")
    assert "Traceback" in e.value.details and "second line of the message" in e.value.details
    with open(e.value.log) as f:
        assert "second line of the message" in f.read()
    assert pool.run(workers.pid_and_world, timeout_s=120)[0] == pid


def test_a_case_leaves_nothing_behind_for_the_next(pool):
    pid = pool.run(workers.changes_globals, timeout_s=120)
    assert pool.run(workers.globals_seen, timeout_s=120) == (pid, None, "torch.float32", True, True)


@pytest.mark.parametrize("case,args,exit_text", [(workers.exits, (3,), "exit code 3"),
                                                 (workers.killed_by, (signal.SIGSEGV,), "signal 11")],
                         ids=["os._exit(3)", "segfault"])
@pytest.mark.slow
def test_a_case_that_ends_its_worker_fails_alone_and_the_next_runs_in_a_new_one(pool, case, args, exit_text):
    pid = pool.run(workers.pid_and_world, timeout_s=120)[0]
    with pytest.raises(WorkerError) as e:
        pool.run(case, args, timeout_s=120)
    assert str(e.value) == (f"case {case.__name__} ended its worker (pid {pid}, {exit_text}) before returning "
                            "a result; the next case starts a new one")
    assert not alive({pid})
    started = pool.workers_started
    new_pid, world = pool.run(workers.pid_and_world, timeout_s=120)
    assert new_pid != pid and world == 1 and pool.workers_started == started + 1


@pytest.mark.slow
def test_a_hanging_case_times_out_alone_and_the_next_runs_in_a_new_worker(pool):
    pid = pool.run(workers.pid_and_world, timeout_s=120)[0]
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as e:
        pool.run(workers.hangs, timeout_s=2)
    assert time.monotonic() - t0 < 10
    assert str(e.value) == (f"case hangs timed out after 2s; its worker (pid {pid}) was killed and the next "
                            "case starts a new one")
    assert not alive({pid})
    assert pool.run(workers.pid_and_world, timeout_s=120)[0] not in (pid, None)


@pytest.mark.slow
def test_close_ends_the_worker_and_a_later_case_starts_a_new_one(tmp_path):
    p = WorkerPool("cpu", log_dir=tmp_path)
    pid = p.run(workers.pid_and_world, timeout_s=120)[0]
    p.close()
    assert p.pid is None and not alive({pid})
    assert p.run(workers.pid_and_world, timeout_s=120)[0] != pid
    p.close()


def _gone(pid: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive({pid}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive({pid})


@pytest.mark.slow
def test_a_single_use_pool_runs_each_case_in_a_worker_that_ran_nothing_started_ahead(tmp_path):
    """The performance tests' workers (tests/gpu.fresh_gpu_workers): a fresh process per case, as
    the budgets were measured, whose imports were paid before the case was sent."""
    with WorkerPool("cpu", log_dir=tmp_path, single_use=True, spares=2) as p:
        p.prestart()
        assert p.workers_started == 2 and p.unused
        first = p.pid
        assert p.run(workers.count_cases, timeout_s=120) == (first, 1)
        assert _gone(first)  # retired after its case (asked to stop, not waited for)
        assert p.workers_started == 3 and p.unused  # a replacement started: two spares again
        second = p.pid
        assert second != first and p.run(workers.count_cases, timeout_s=120) == (second, 1)
        with pytest.raises(WorkerError, match="ended its worker"):
            p.run(workers.exits, (3,), timeout_s=120)
        assert p.run(workers.count_cases, timeout_s=120)[1] == 1  # a crash fails alone
        spares = [q[0].pid for q in p._queue]
    assert len(spares) == 2 and not any(alive({pid}) for pid in spares)  # close() ends the spares


@pytest.mark.slow
def test_a_spare_still_importing_is_killed_at_once_and_close_all_keeps_unused_spares(tmp_path):
    spare = WorkerPool("cpu", log_dir=tmp_path, single_use=True, spares=1)
    used = WorkerPool("cpu", log_dir=tmp_path)
    used.run(workers.pid_and_world, timeout_s=120)
    spare.prestart()
    pids = {used.pid, spare.pid}
    worker_pool.close_all(keep_unused=True)  # what a performance test does before taking the GPU alone
    assert used.pid is None and spare.pid is not None and alive({spare.pid})
    t0 = time.monotonic()
    spare.close()  # its imports (12 s on a 2-core CPU) are not waited for
    assert time.monotonic() - t0 < 5 and not alive(pids)


def test_an_unknown_device_is_one_line_before_anything_starts():
    with pytest.raises(VitcoreError, match=r"^worker pool device 'gpu' is not one of cpu, cuda$"):
        WorkerPool("gpu")


def _probe_run(plugin: str, parity_data, probe, runner) -> dict:
    cfg = RunConfig(plugin=plugin, precision="fp32", device="cpu", **PARITY)
    return runner(train.steps_then_probe, (cfg, parity_data, PARITY_STEPS, probe))


@pytest.mark.slow
def test_pooled_cases_equal_fresh_processes_bit_for_bit_for_plugins_in_sequence(pool, parity_data, probe):
    """colossalai.launch and destroy repeated in one worker for torch_ddp, hybrid_parallel, torch_ddp:
    every pooled run's losses and probe logits equal launch.spawn's exactly (same process count,
    threads and seed: nothing of an earlier case leaks into a later one)."""
    def pooled(fn, args):
        return pool.run(fn, args, timeout_s=300)

    def spawned(fn, args):
        return launch.spawn(fn, args, world_size=1, device="cpu", timeout_s=300)[0]

    ddp, hybrid, ddp_again = (_probe_run(p, parity_data, probe, pooled)
                              for p in ("torch_ddp", "hybrid_parallel", "torch_ddp"))
    for plugin, got in (("torch_ddp", ddp), ("hybrid_parallel", hybrid)):
        fresh = _probe_run(plugin, parity_data, probe, spawned)
        print(plugin, "pooled:", got["step_loss"], "fresh:", fresh["step_loss"])
        assert len(got["step_loss"]) == PARITY_STEPS and got["plugin"] == plugin
        assert got["step_loss"] == fresh["step_loss"] and got["probe_logits"] == fresh["probe_logits"]
    assert ddp_again["step_loss"] == ddp["step_loss"] and ddp_again["probe_logits"] == ddp["probe_logits"]


# --- what the session's processes share: results computed once, the GPU (tests/support) --------
def test_a_result_is_computed_once_for_the_whole_session_and_a_failure_stores_nothing(request):
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.5)  # the other asker arrives meanwhile and waits on the file lock
        return {"loss": [1.0, 0.5]}

    key = ("torch_ddp", "fp32", 5, time.time())  # unique to this test run
    session_dir(request.config)  # pytest makes its basetemp at the first ask, not thread-safely
    got = []
    threads = [threading.Thread(target=lambda: got.append(computed_once(request.config, "t", key, compute)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [{"loss": [1.0, 0.5]}] * 2 and len(calls) == 1

    def fails():
        calls.append(1)
        raise RuntimeError("no GPU")

    for _ in range(2):  # nothing stored: the second asker computes (and fails) again
        with pytest.raises(RuntimeError, match="no GPU"):
            computed_once(request.config, "t", key + ("failing",), fails)
    assert len(calls) == 3


def test_the_gpu_lock_lets_correctness_tests_share_and_a_performance_test_wait_for_all_of_them(request):
    events = []
    session_dir(request.config)  # pytest makes its basetemp at the first ask, not thread-safely

    def exclusive():
        with gpu_share(request.config, exclusive=True):
            events.append("exclusive")

    with gpu_share(request.config, exclusive=False):
        with gpu_share(request.config, exclusive=False):  # a second sharer is not held up
            writer = threading.Thread(target=exclusive)
            writer.start()
            time.sleep(0.5)
            assert events == [], "the exclusive holder ran beside sharing ones"
            events.append("shared done")
    writer.join(timeout=10)
    assert events == ["shared done", "exclusive"]


def _pytest(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


@pytest.mark.slow
def test_performance_tests_are_collected_after_every_other_test():
    p = _pytest("--collect-only", "-q", "tests/test_gpu.py", "tests/test_pool.py", "--plugin", "torch_ddp")
    ids = [line for line in p.stdout.splitlines() if "::" in line]
    perf = [i for i, nodeid in enumerate(ids) if nodeid.startswith("tests/test_gpu.py::test_performance_")]
    expected = len(re.findall(r"^def test_performance_", (ROOT / "tests" / "test_gpu.py").read_text(), re.M))
    assert p.returncode == 0 and expected >= 2 and len(perf) == expected, p.stdout[-2000:]  # one case each
    assert perf == list(range(len(ids) - expected, len(ids))), ids


@pytest.mark.slow
def test_shared_gpu_tests_take_turns_by_function_so_no_worker_starts_waiting():
    p = _pytest("--collect-only", "-q", "-m", "gpu", "tests/test_gpu.py", "--plugin", "gemini,torch_ddp")
    ids = [line.split("::")[1] for line in p.stdout.splitlines() if "::" in line]
    functions = [i.split("[")[0] for i in ids if not i.startswith("test_performance_")]
    assert p.returncode == 0 and len(functions) == 21, p.stdout[-2000:]  # 7 cases of each function
    turn = ["test_parity_with_torch_ddp", "test_checkpoint_roundtrip", "test_convergence"]
    assert functions == turn * 7, functions
    assert len(set(ids)) == len(ids)  # each case once


# Makes the root conftest's pytest_cmdline_main (where it decides how to run) believe this host has
# a CUDA GPU, and nothing else: not bitsandbytes at import, not pytest-metadata, not the tests.
FAKE_CUDA_AT_START = '''
import sys
import torch

REAL = torch.cuda.is_available

def _asked_by_cmdline_main():
    return sys._getframe(1).f_code.co_name == "pytest_cmdline_main" or REAL()

torch.cuda.is_available = _asked_by_cmdline_main
'''


@pytest.mark.slow
def test_pytest_m_gpu_runs_on_xdist_workers_on_a_cuda_host_unless_told_otherwise(tmp_path):
    (tmp_path / "fake_cuda_at_start.py").write_text(FAKE_CUDA_AT_START)
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    gpu = ("-m", "gpu", "tests/test_gpu.py", "--plugin", "torch_ddp", "-k", "parity", "-rs")
    header = "2 xdist workers share the GPU"
    p = _pytest("-p", "fake_cuda_at_start", *gpu, "--gpu-workers", "2", env=env)
    assert p.returncode == 0 and header in p.stdout and "created: 2/2 workers" in p.stdout, p.stdout[-3000:]
    assert "needs a CUDA GPU" in p.stdout  # the workers have none: every case skips with the reason
    for override in (("-n", "0"), ("--gpu-workers", "0")):
        p = _pytest("-p", "fake_cuda_at_start", *gpu, *override, env=env)
        assert p.returncode == 0 and header not in p.stdout and "workers" not in p.stdout, p.stdout[-3000:]
    p = _pytest(*gpu)  # this CPU host: no workers
    assert p.returncode == 0 and "workers" not in p.stdout and "needs a CUDA GPU" in p.stdout, p.stdout[-3000:]
