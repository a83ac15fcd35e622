"""The suite's pytest options as one typed object, read and validated once when pytest configures
(`config.stash[SUITE]`, `suite(config)`): a bad value ends the session at its start in one line,
and no test parses an option again (pytest-benchmark's session object does the same)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from vitcore import VitcoreError
from vitcore.cli import preflight
from vitcore.cli.options import DEFAULT_BUDGETS
from vitcore.gate import budget_files
from vitcore.inputs.model import get_preset
from vitcore.spec import plugins

BUDGETS_DEFAULT = DEFAULT_BUDGETS  # the CLI's default, written once


@dataclass(frozen=True)
class SuiteOptions:
    plugin: tuple[str, ...] | None  # --plugin: names or families; None: every entry
    model: str  # --model: the GPU tests' preset
    dataset: str
    budgets: str
    update_budgets: bool
    allow_missing_budgets: bool
    allow_invariant_change: bool
    perf_batch_sizes: tuple[int, ...]
    perf_steps: int
    perf_min_window: float
    perf_repeats: int
    perf_processes: int  # resolved: --perf-processes, else 3 when recording budgets (the band) and 1 to check
    perf_inject_device_pct: float
    world_sizes: tuple[int, ...]
    results_out: str | None
    gpu_workers: int
    verbose: int
    compile: bool = False  # --compile: the correctness tests with each entry compiled (its CompilePlan)

    def selected(self) -> list[plugins.PluginSpec]:
        return plugins.select(list(self.plugin) if self.plugin else None)

    @classmethod
    def from_config(cls, config) -> SuiteOptions:
        """Every option checked; a VitcoreError names the bad value and what is valid."""
        opt = config.getoption
        raw_plugin = opt("--plugin")
        update = bool(opt("--update-budgets"))
        for flag in ("--perf-processes", "--perf-repeats", "--perf-steps"):
            if opt(flag) is not None and opt(flag) < 1:
                raise VitcoreError(f"{flag} {opt(flag)} must be an integer >= 1")
        if opt("--gpu-workers") < 0:
            raise VitcoreError(f"--gpu-workers {opt('--gpu-workers')} must be an integer >= 0")
        n = opt("--perf-processes")
        if update and n is not None and n < budget_files.MIN_RECORD_PROCESSES:
            raise VitcoreError(f"--perf-processes {n} with --update-budgets: a budget needs at least "
                               f"{budget_files.MIN_RECORD_PROCESSES} fresh processes (the band they span)")
        folder = opt("--budgets")
        if not update and folder != BUDGETS_DEFAULT and not os.path.isdir(folder):
            raise VitcoreError(f"--budgets {folder!r} is not a folder; give the folder of per-device "
                               f"budget files (default {BUDGETS_DEFAULT})")
        preflight.check_budget_folder(folder, "--budgets")
        model = opt("--model") or "vit-base"
        get_preset(model)  # an unknown preset: one line naming the presets
        out = cls(plugin=tuple(p.strip() for p in raw_plugin.split(",")) if raw_plugin else None, model=model,
                  dataset=opt("--dataset"), budgets=folder, update_budgets=update,
                  allow_missing_budgets=bool(opt("--allow-missing-budgets")),
                  allow_invariant_change=bool(opt("--allow-invariant-change")),
                  perf_batch_sizes=int_list("--perf-batch-sizes", opt("--perf-batch-sizes")),
                  perf_steps=opt("--perf-steps"), perf_min_window=opt("--perf-min-window"),
                  perf_repeats=opt("--perf-repeats"),
                  perf_processes=n if n is not None else (budget_files.MIN_RECORD_PROCESSES if update else 1),
                  perf_inject_device_pct=opt("--perf-inject-device-pct"),
                  world_sizes=int_list("--world-sizes", opt("--world-sizes")), results_out=opt("--results-out"),
                  gpu_workers=opt("--gpu-workers"), verbose=opt("verbose"), compile=bool(opt("--compile")))
        out.selected()  # an unknown plugin name: one line naming the valid ones
        return out


def int_list(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise VitcoreError(f"{flag} {text!r}: expected positive integers, comma-separated (e.g. 32,128)")
    return values


SUITE = pytest.StashKey[SuiteOptions]()


def suite(config) -> SuiteOptions:
    return config.stash[SUITE]
