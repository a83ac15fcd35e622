"""vitcore: a benchmark and correctness suite for Colossal-AI Booster plugins on ViT / dog_food.

The subpackages, each importing only those below it (tests/test_layout.py holds the order):

    cli        the command line: commands, option parsers, preflight checks, the gate flow, the A/B mode
    reporting  derived fields and tables, the memory bound, Markdown / HTML / CSV and charts
    gate       the regression rule, the sample statistics, the per-device budget files
    measure    the bench's plan and run loop, timed windows, GPU readings, the references, console lines
    training   setup through the Booster, the step, checkpoints, the schedule, the plain-PyTorch loop
    processes  process groups and the GPU-tier worker, colossalai shims, the console rule
    store      the result files: append-only points, resume, the --out lock
    spec       what a run and a point are: the plugin registry, RunConfig, the point schema, env
    inputs     what is trained: the dataset's offline forms, model presets and weights, HF caches

and, below them all, this module's errors and `vitcore.files` (atomic writes, the cache folder).
`from vitcore import plugins` (or any module by its old flat name) still works: see __getattr__.
"""

import importlib

__version__ = "0.1.0"


class VitcoreError(Exception):
    """An error caused by user input or the environment; the CLI prints it as one line."""


class ConfigError(VitcoreError, ValueError):
    """A bad configuration value; the message names the value and the valid choices."""


class DataError(VitcoreError):
    """A dataset could not be found, read or validated."""


class Diverged(VitcoreError):
    """Training produced a NaN or inf loss."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"diverged: loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


# The flat names of 0a0b2d2's modules, kept for users and notebooks (`from vitcore import plugins`);
# the suite itself imports the subpackages (tests/test_layout.py checks that it does).
_MOVED = {
    **dict.fromkeys(("data", "hub_cache", "model"), "inputs"),
    **dict.fromkeys(("checks", "config", "env", "plugins", "points"), "spec"),
    "results": "store",
    **dict.fromkeys(("compat", "launch", "worker_pool"), "processes"),
    **dict.fromkeys(("checkpoint", "plain", "schedule", "train"), "training"),
    **dict.fromkeys(("bench", "profiling", "reference", "timing"), "measure"),
    **dict.fromkeys(("budget_files", "budgets", "stats"), "gate"),
    **dict.fromkeys(("analysis", "charts", "memory", "report"), "reporting"),
    **dict.fromkeys(("ab", "gating", "options", "preflight"), "cli"),
}


_RENAMED = {"plugin_entries": "vitcore.spec.plugins"}  # (console.py was split in two)


def __getattr__(name: str):
    if name in _MOVED:
        return importlib.import_module(f"vitcore.{_MOVED[name]}.{name}")
    if name in _RENAMED:
        return importlib.import_module(_RENAMED[name])
    raise AttributeError(f"module 'vitcore' has no attribute {name!r}")
