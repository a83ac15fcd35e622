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


# --- cases for the worker pool (tests/test_pool.py) ---
def pid_and_world():
    return os.getpid(), dist.get_world_size()


def exits(code: int):
    os._exit(code)  # no clean-up, no reply: as a crashing extension would end the worker


def killed_by(sig: int):
    os.kill(os.getpid(), sig)
    time.sleep(60)


def raises_two_lines():
    raise ValueError("boom in the case\nsecond line of the message")


def changes_globals():
    """Leaves state behind that a fresh process would not have."""
    import torch

    os.environ["VITCORE_POOL_LEFTOVER"] = "1"
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    return os.getpid()


def globals_seen():
    import torch

    return (os.getpid(), os.environ.get("VITCORE_POOL_LEFTOVER"), str(torch.get_default_dtype()),
            torch.is_grad_enabled(), dist.is_initialized())


_CASES_RUN = 0  # how many cases this worker process has run (module state a fresh process starts without)


def count_cases():
    global _CASES_RUN
    _CASES_RUN += 1
    return os.getpid(), _CASES_RUN


def compiled_graphs_and_keys(cfg):
    """Two steps of `cfg` (compiled): dynamo's captured graphs and the model's first state-dict keys."""
    from torch._dynamo.utils import counters

    from vitcore.measure.timing import random_batch
    from vitcore.training import train

    counters.clear()
    s = train.setup(cfg, synthetic_batch=True)
    batch = random_batch(cfg.preset, cfg.batch_size, 0, s.device)
    for _ in range(2):
        train.train_step(s, batch)
    return counters["stats"]["unique_graphs"], list(s.model.unwrap().state_dict())[:4]


def fsdp_use_orig_params(cfgs):
    """What each config's torch_fsdp plugin passes FSDP as use_orig_params (the plugin needs a process group)."""
    from vitcore.spec.plugins import BuildContext

    return [cfg.spec.build(BuildContext(precision=cfg.precision)).fsdp_kwargs.get("use_orig_params") for cfg in cfgs]
