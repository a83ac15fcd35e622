import signal
import socket
import sys
import time

import pytest

from tests.support import workers
from vitcore.processes import launch
from vitcore.processes.launch import WorkerError
from vitcore.spec.config import RunConfig


@pytest.mark.slow
def test_two_gloo_processes_return_per_rank_results_and_die_with_their_parent():
    got = launch.run(workers.lifeline, world_size=2, device="cpu", timeout_s=120)
    if sys.platform.startswith("linux"):  # named for ps, and the kernel kills them when this process dies
        assert got == [(0, "vitcore-rank0", signal.SIGKILL), (1, "vitcore-rank1", signal.SIGKILL)]
    assert [r for r, _, _ in got] == [0, 1]


@pytest.mark.slow
def test_killed_worker_ends_the_run_with_an_error_within_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker rank 1 died \(signal 9\)"):
        launch.run(workers.rank1_is_killed, world_size=2, device="cpu", timeout_s=120)
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
def test_a_failure_is_one_line_naming_the_cause_and_its_log_holds_every_traceback(tmp_path):
    cfg = RunConfig(plugin="torch_ddp", model="vit-tiny", batch_size=8, device="cpu")
    with pytest.raises(WorkerError) as e:
        # rank 0's "connection closed" arrives first; the cause is rank 1's error
        launch.spawn(workers.rank0_symptom_first, (), world_size=2, device="cpu", timeout_s=120,
                     label=launch._label([cfg]), log_dir=tmp_path)
    log = next(tmp_path.glob("*.log"))
    assert str(e.value) == ("worker rank 1 failed in torch_ddp fp32 bs8: ValueError: boom in rank 1; "
                            f"every rank's traceback: {log}")
    text = log.read_text()
    assert "--- rank 1: ValueError: boom in rank 1" in text and "second line of the message" in text
    assert "--- rank 0: RuntimeError: [gloo] Connection closed by peer" in text and "Traceback" in text


@pytest.mark.slow
def test_hanging_workers_time_out():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"timed out after 8s waiting for ranks \[0, 1\]"):
        launch.run(workers.hangs, world_size=2, device="cpu", timeout_s=8)
    assert time.monotonic() - t0 < 48


@pytest.mark.slow
def test_a_rendezvous_port_taken_meanwhile_is_retried_on_a_new_one(monkeypatch):
    # another process took the port between free_port() and rank 0's store: hold one and hand it out first
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    real = launch.free_port
    monkeypatch.setattr(launch, "free_port", lambda: ports.pop() if ports else real())
    try:
        assert launch.run(workers.rank_and_world, world_size=2, device="cpu", timeout_s=120) == [(0, 2), (1, 2)]
        assert not ports  # the taken port was tried first
    finally:
        taken.close()


@pytest.mark.slow
def test_a_failure_other_than_the_port_is_not_retried(monkeypatch):
    calls = []
    real = launch.free_port
    monkeypatch.setattr(launch, "free_port", lambda: calls.append(1) or real())
    with pytest.raises(WorkerError, match="boom in rank 1"):
        launch.run(workers.rank1_raises, world_size=2, device="cpu", timeout_s=120)
    assert len(calls) == 1
