"""Rank functions for the launch tests (module level so that spawn can import them)."""

import os
import signal
import time

import torch.distributed as dist


def rank_and_world():
    return dist.get_rank(), dist.get_world_size()


def rank1_is_killed():
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 would wait here forever without the runner's watchdog
    return "unreachable"


def rank1_raises():
    if dist.get_rank() == 1:
        raise ValueError("boom in rank 1")
    time.sleep(60)


def hangs():
    time.sleep(600)
