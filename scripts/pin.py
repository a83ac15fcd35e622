"""Run a command pinned to a set of CPUs (its child processes inherit it): `python3 scripts/pin.py 2,3,4,5 CMD...`.
os.sched_setaffinity, because the device image need not have util-linux's taskset."""
import os
import sys

cpus, cmd = sys.argv[1], sys.argv[2:]
os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
os.execvp(cmd[0], cmd)
