"""The worker pool (vitcore/worker_pool.py) on CPU, through the code path the GPU tier uses (the
device is a parameter): start-up paid once, every case isolated, a crashing or hanging case fails
alone and the next case runs in a new worker, and a pooled case computes bit for bit what a fresh
launch.spawn process computes, for several plugins in sequence in one worker."""

from __future__ import annotations

import signal
import time

import pytest

from tests import workers
from tests.helpers import PARITY, PARITY_STEPS
from tests.test_lifecycle import alive
from vitcore import VitcoreError, launch, train
from vitcore.config import RunConfig
from vitcore.launch import WorkerError
from vitcore.worker_pool import WorkerPool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with WorkerPool("cpu", log_dir=tmp_path_factory.mktemp("pool-logs")) as p:
        yield p


def _timed(pool, fn, *args, timeout_s=120.0):
    t0 = time.monotonic()
    out = pool.run(fn, args, timeout_s=timeout_s)
    return out, time.monotonic() - t0


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


def test_close_ends_the_worker_and_a_later_case_starts_a_new_one(tmp_path):
    p = WorkerPool("cpu", log_dir=tmp_path)
    pid = p.run(workers.pid_and_world, timeout_s=120)[0]
    p.close()
    assert p.pid is None and not alive({pid})
    assert p.run(workers.pid_and_world, timeout_s=120)[0] != pid
    p.close()


def test_an_unknown_device_is_one_line_before_anything_starts():
    with pytest.raises(VitcoreError, match=r"^worker pool device 'gpu' is not one of cpu, cuda$"):
        WorkerPool("gpu")


def _probe_run(plugin: str, parity_data, probe, runner) -> dict:
    cfg = RunConfig(plugin=plugin, precision="fp32", device="cpu", **PARITY)
    return runner(train.steps_then_probe, (cfg, parity_data, PARITY_STEPS, probe))


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
