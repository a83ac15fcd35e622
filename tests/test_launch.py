import socket
import time

import pytest

from tests import workers
from vitcore import launch
from vitcore.launch import WorkerError


def test_two_gloo_processes_return_per_rank_results():
    assert launch.run(workers.rank_and_world, world_size=2, device="cpu", timeout_s=120) == [(0, 2), (1, 2)]


def test_killed_worker_ends_the_run_with_an_error_within_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker rank 1 died \(signal 9\)"):
        launch.run(workers.rank1_is_killed, world_size=2, device="cpu", timeout_s=120)
    assert time.monotonic() - t0 < 120


def test_failing_worker_reports_its_traceback():
    with pytest.raises(WorkerError, match=r"(?s)worker rank 1 failed:.*ValueError: boom in rank 1"):
        launch.run(workers.rank1_raises, world_size=2, device="cpu", timeout_s=120)


def test_hanging_workers_time_out():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"timed out after 20s waiting for ranks \[0, 1\]"):
        launch.run(workers.hangs, world_size=2, device="cpu", timeout_s=20)
    assert time.monotonic() - t0 < 60


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


def test_a_failure_other_than_the_port_is_not_retried(monkeypatch):
    calls = []
    real = launch.free_port
    monkeypatch.setattr(launch, "free_port", lambda: calls.append(1) or real())
    with pytest.raises(WorkerError, match="boom in rank 1"):
        launch.run(workers.rank1_raises, world_size=2, device="cpu", timeout_s=120)
    assert len(calls) == 1
