"""Rank functions for the launch tests (module level so that spawn can import them)."""

import ctypes
import os
import signal
import sys
import time

import torch.distributed as dist

PR_GET_PDEATHSIG = 2


def rank_and_world():
    return dist.get_rank(), dist.get_world_size()


def lifeline():
    """This rank, the process name and the signal it gets when its parent dies (Linux; else None)."""
    if not sys.platform.startswith("linux"):
        return dist.get_rank(), None, None
    sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
    with open(f"/proc/{os.getpid()}/comm") as f:
        return dist.get_rank(), f.read().strip(), sig.value


def rank1_is_killed():
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 would wait here forever without the runner's watchdog
    return "unreachable"


def rank1_raises():
    if dist.get_rank() == 1:
        raise ValueError("boom in rank 1")
    time.sleep(60)


def rank0_symptom_first():
    """Rank 0 reports a peer's symptom before rank 1 reports the cause."""
    if dist.get_rank() == 0:
        raise RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234\nmore lines")
    time.sleep(0.5)
    raise ValueError("boom in rank 1\nsecond line of the message")


def hangs():
    time.sleep(600)
