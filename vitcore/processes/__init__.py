"""Processes and their output: process groups in-process, spawned (watchdog, timeouts, port
retry) or under torchrun (`launch`); the long-lived GPU-tier worker (`worker_pool`); colossalai 0.5.0
shims (`compat`); and the console rule: what is not the suite's own output goes to the run's log,
counted in one line (`output`).
"""

__all__ = ["compat", "launch", "output", "worker_pool"]
