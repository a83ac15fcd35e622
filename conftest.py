"""pytest options, plugin parametrization from the registry, hardware skips, session summary, and
how `pytest -m gpu` shares the one GPU (xdist workers by default, performance tests last)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pytest
import torch
from _pytest.mark.expression import Expression

from tests.support.gpu import interleave_shared_gpu, needs_gpus_alone, third_party_log
from tests.support.options import BUDGETS_DEFAULT, SUITE, SuiteOptions, suite
from tests.support.xdist import XDIST_CHANNELS, xdist_collect, xdist_merge
from vitcore import VitcoreError
from vitcore.gate import budget_files, budgets
from vitcore.spec import points
from vitcore.spec.config import profile_precision
from vitcore.spec.points import key_text


@dataclass
class BudgetChecks:
    """The session's comparisons of points with budgets (tests/budget_checks.check_budgets records them),
    reported together at the end (pytest_terminal_summary): how many points were judged on device
    time, on the portable invariants only, and not at all; every failing verdict; the wall-time
    verdicts (reported, never a test)."""

    judged: dict[str, list[str]] = field(default_factory=dict)  # point -> gate groups with a budget
    missing: dict[str, list[str]] = field(default_factory=dict)  # point -> groups without one
    violations: list[str] = field(default_factory=list)
    wall: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # why a point's wall time was not judged (NoBudget)

    def record(self, point: dict, groups, verdicts, lacking) -> list[str]:
        """Notes one point's gated verdicts; returns its failing ones (the test fails on them). An
        inconclusive gated verdict fails too: the gate could not decide (a throttled clock)."""
        k = key_text(point)
        have = {v.group for v, _ in verdicts}
        self.judged.setdefault(k, [])
        self.judged[k] += sorted(have - set(self.judged[k]))
        self.missing.setdefault(k, [])
        self.missing[k] += sorted(set(groups) - have - set(self.missing[k]))
        failing = [f"{v} (budget of {dev})" for v, dev in verdicts if budgets.fails(v) or v.outcome == "inconclusive"]
        self.violations += failing
        return failing

    def report(self, verdicts, lacking) -> None:
        self.wall += [f"{v} (budget of {dev})" for v, dev in verdicts]
        self.unjudged += [m for m in lacking if m not in self.unjudged]

    def merge(self, other: dict) -> None:
        for name in ("judged", "missing"):
            for k, groups in other[name].items():
                mine = getattr(self, name).setdefault(k, [])
                mine += [g for g in groups if g not in mine]
        self.violations += other["violations"]
        self.wall += other["wall"]
        self.unjudged += [m for m in other["unjudged"] if m not in self.unjudged]

    def summary(self) -> list[str]:
        if not self.judged:
            return []
        keys = sorted(self.judged)
        device = [k for k in keys if "device_time" in self.judged[k]]
        invariants = [k for k in keys if k not in device and self.judged[k]]
        none = [k for k in keys if not self.judged[k]]
        out = [f"{len(keys)} points: {len(device)} judged on device time and invariants, {len(invariants)} on "
               f"invariants only (no budget of this device), {len(none)} not at all; "
               f"{len(self.violations)} failing verdicts"]
        out += [f"FAILED {v}" for v in self.violations]
        out += [f"invariants only: {k} (no {', '.join(self.missing[k])})" for k in invariants]
        out += [f"not judged: {k}" for k in none]
        if self.wall or self.unjudged:
            out.append("wall time, reported and not gated here (one process a side cannot decide it; "
                       "`vitcore ab` decides it: docs/gate.md):")
            out += [f"  {w}" for w in self.wall]
            out += [f"  not judged: {budget_files.join_missing(self.unjudged)}"] if self.unjudged else []
        return out


BUDGET_CHECKS = pytest.StashKey[BudgetChecks]()


@pytest.fixture(scope="session")
def budget_checks(pytestconfig) -> BudgetChecks:
    return pytestconfig.stash[BUDGET_CHECKS]




# The single-GPU correctness cases (tiny preset, batch 16) need well under 2 GiB each, and each
# xdist process holds one pooled GPU worker (docs/gpu.md): 4 keep the GPU busy while one process is
# on the host (data, pickling, checks) and stay far from a 80 GiB card's memory.
GPU_WORKERS = 4
AUTO_WORKERS = pytest.StashKey[int]()  # set when pytest_cmdline_main chose the xdist workers


def _selects_gpu_tier(config) -> bool:
    """-m selects tests marked only `gpu` (e.g. -m gpu, -m "gpu and not slow")."""
    expr = config.option.markexpr
    try:
        return bool(expr) and Expression.compile(expr).evaluate(lambda name, **kw: name == "gpu")
    except Exception:  # noqa: BLE001 - a malformed -m: pytest reports it itself
        return False


def pytest_addoption(parser):
    g = parser.getgroup("vitcore", "vitcore benchmark suite")
    g.addoption("--plugin", default=None,
                help="comma-separated registry names or families (e.g. gemini); default: all")
    g.addoption("--model", default=None, help="model preset for GPU tests (default vit-base)")
    g.addoption("--dataset", default="auto", help="auto | embedded | lewtun/dog_food | PATH")
    g.addoption("--budgets", default=BUDGETS_DEFAULT, help="folder of per-device budget files")
    g.addoption("--update-budgets", action="store_true",
                help="record the performance tests' points as this device's budgets (3 fresh processes a point "
                     "unless --perf-processes), printing what changed")
    g.addoption("--allow-missing-budgets", action="store_true",
                help="a performance test without a budget skips instead of failing (exploring a new device)")
    g.addoption("--allow-invariant-change", action="store_true",
                help="with --update-budgets: record launches / allocated memory that contradict another "
                     "device's of the same architecture (a deliberate change of the code)")
    g.addoption("--perf-batch-sizes", default="32,128", help="batch sizes of the performance tests (comma-separated)")
    # Defaults: 3 windows of at least 5 steps and 0.3 s, fewer than the budgets were recorded with
    # (10 steps x 5 windows, docs/gate.md), to keep `pytest -m gpu --plugin=gemini` near 3 minutes:
    # device time (5 profiled steps after the windows), launches and the steady memory peak of
    # identical steps do not depend on the window count, and one process cannot decide wall time.
    g.addoption("--perf-steps", type=int, default=5, help="steps per timed window (performance tests)")
    g.addoption("--perf-min-window", type=float, default=0.3,
                help="seconds each timed window lasts at least (steps are added when they are fast)")
    g.addoption("--perf-repeats", type=int, default=3, help="timed windows per process")
    g.addoption("--perf-processes", type=int, default=None,
                help="fresh processes per performance measurement (default: 3 with --update-budgets, else 1)")
    g.addoption("--perf-inject-device-pct", type=float, default=0.0,
                help="test only: after every step a GPU spin of this %% of its device time (the gate must catch it; "
                     "such points are never budgets)")
    g.addoption("--world-sizes", default="2,4,8",
                help="multigpu tier: world sizes (comma-separated); sizes above the GPU count skip with the reason")
    g.addoption("--compile", action="store_true",
                help="parity, checkpoint and convergence with each entry compiled where its plan says (issue 29: "
                     "an entry's compiled form enters the fast profile only after passing them)")
    g.addoption("--results-out", default=None, help="write GPU-tier results JSON into this folder")
    g.addoption("--gpu-workers", type=int, default=GPU_WORKERS,
                help=f"pytest -m gpu on a CUDA host without -n: xdist processes sharing the GPU (default "
                     f"{GPU_WORKERS}; 0 = all in this process; -n N overrides)")



@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`pytest -m gpu` on a CUDA host without -n runs on --gpu-workers xdist processes (dist load),
    as if -n had been given; never in an xdist worker, with --pdb, --collect-only or -n."""
    n = config.getoption("--gpu-workers")
    if (n < 1 or hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist")
            or getattr(config.option, "numprocesses", None) is not None or config.getoption("usepdb")
            or config.getoption("collectonly") or not _selects_gpu_tier(config) or not torch.cuda.is_available()):
        return
    config.option.numprocesses = n
    config.option.tx = ["popen"] * n
    if config.option.dist == "no":
        config.option.dist = "load"
    config.stash[AUTO_WORKERS] = n


def pytest_report_header(config):
    n = config.stash.get(AUTO_WORKERS, None)
    if n:
        return [f"vitcore: -m gpu on a CUDA host: {n} xdist workers share the GPU, performance tests run last "
                "and alone (--gpu-workers N or -n N to change, -n 0 for one process; docs/gpu.md)"]
    return None


def _cases(specs, *, single_gpu: bool, profile: str | None = None):
    """(entry, precision) pairs; pytest ids like gemini-bf16. profile: only the precision that
    profile picks for each entry on a GPU (performance tests measure the `fast` profile; on a host
    without one they are collected with the same ids and skip)."""
    out = []
    for s in specs:
        if single_gpu and s.min_world_size > 1:
            continue
        precs = s.precisions
        if profile:
            precs = [profile_precision(s, profile, cuda=True)]
        for prec in precs:
            out.append(pytest.param(s, prec, id=f"{s.name}-{prec}"))
    return out


def pytest_generate_tests(metafunc):
    if {"spec", "precision"} <= set(metafunc.fixturenames):
        specs = suite(metafunc.config).selected()
        single = metafunc.definition.get_closest_marker("gpu") is not None
        prof = metafunc.definition.get_closest_marker("profile")
        metafunc.parametrize(("spec", "precision"),
                             _cases(specs, single_gpu=single, profile=prof.args[0] if prof else None))


def pytest_collection_modifyitems(config, items):
    # Tests that need the GPUs alone (performance, multigpu) last: the shared-GPU tests run out first.
    items.sort(key=needs_gpus_alone)  # stable
    interleave_shared_gpu(items)
    # --plugin also filters tests that name their plugin in a `plugin_names` marker.
    if not suite(config).plugin:
        return
    wanted = {s.name for s in suite(config).selected()}
    keep, drop = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        spec = params.get("spec") or params.get("entry")
        marker = item.get_closest_marker("plugin_names")
        names = {spec.name} if spec else set(marker.args) if marker else None
        (drop if names is not None and not names & wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)  # before pytest-metadata's, whose pytest_metadata hook reads the options
def pytest_configure(config):
    config.addinivalue_line("markers", "plugin_names(*names): registry entries a test exercises")
    config.addinivalue_line("markers", "profile(name): parametrize with the precision this profile picks per entry")
    config.addinivalue_line("markers", "gpu_exclusive: runs after every other GPU test of the session, with the "
                                       "GPU to itself (performance; docs/gpu.md)")
    config.stash[BUDGET_CHECKS] = BudgetChecks()
    config.stash[SUITE] = _check_options(config)
    _CONFIG["config"] = config
    config.option.disable_warnings = True  # they go to the third-party log (pytest_warning_recorded)


def _check_options(config) -> SuiteOptions:
    """The suite's options, read once. Bad values end the session at its start as a usage error (exit
    code 4, one line), never as an INTERNALERROR during collection or a failure after the GPU tier ran."""
    try:
        return SuiteOptions.from_config(config)
    except VitcoreError as e:
        raise pytest.UsageError(f"vitcore: {e}") from None


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") or item.get_closest_marker("multigpu"):
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU; torch.cuda.is_available() is False on this machine")
    m = item.get_closest_marker("multigpu")
    if m:
        need = m.kwargs.get("n", 2)
        if torch.cuda.device_count() < need:
            pytest.skip(f"needs {need} GPUs; {torch.cuda.device_count()} present")


# a worker's budget checks go to the controller, which prints the session's summary
XDIST_CHANNELS["vitcore_budget_checks"] = (lambda config: asdict(config.stash[BUDGET_CHECKS]),
                                           lambda config, data: config.stash[BUDGET_CHECKS].merge(data))


def pytest_sessionfinish(session):
    xdist_collect(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: a finished worker's channels (XDIST_CHANNELS) into this session."""
    xdist_merge(node)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash[BUDGET_CHECKS].summary()
    if lines:
        terminalreporter.section("vitcore performance budgets")
        for line in lines:
            terminalreporter.write_line(line)
    log = third_party_log(config)
    n = sum(1 for _ in open(log, errors="replace")) if log.exists() else 0
    if n:  # the one line about everything that is not the suite's own output
        terminalreporter.write_line(f"vitcore: {n} lines of third-party output (warnings, GPU workers' output) in {log}")


def pytest_warning_recorded(warning_message, when, nodeid, location):
    """Every Python warning goes to the session's third-party log, whichever package raised it (the
    console's warnings summary is off: pytest_configure); none is matched by its text."""
    config = _CONFIG.get("config")
    if config is None:
        return
    import warnings

    text = warnings.formatwarning(warning_message.message, warning_message.category, warning_message.filename,
                                  warning_message.lineno, warning_message.line)
    with open(third_party_log(config), "a") as f:
        f.write(f"[{nodeid or when}] {text}")


_CONFIG: dict = {}


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata, config):
    """The pytest-html Environment table: where the run happened and against which budgets."""
    from vitcore.gate import budget_files
    from vitcore.spec.env import environment

    # an xdist controller never opens a CUDA context (it would hold GPU memory beside the workers
    # that measure); pytest-metadata replaces these rows with a worker's when it goes down
    controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")
    env = environment(cuda=not controller)
    path = budget_files.budget_path(suite(config).budgets, env)
    # plain str values: pytest-xdist sends a worker's metadata to the controller, and execnet cannot
    # serialise torch's TorchVersion (every H200 check's workers went down on it at session end)
    metadata.update({k: str(v) for k, v in {
        "GPU": f"{env['gpu_name']} x{env['gpu_count']} (sm {env['gpu_compute_capability']}, "
               f"{env['gpu_sm_count']} SMs)" if env["gpu_name"] else env["device"],
        "NVIDIA driver": env["driver"] or "none", "torch": env["torch"], "CUDA": env["cuda"] or "none (CPU build)",
        "colossalai": env["colossalai"] or "not installed", "transformers": env["transformers"] or "not installed",
        "git sha": env["git_sha"], "device identity": points.device_key(env),
        "architecture key": points.arch_key(env) or "none (no GPU)",
        "budget file": f"{path} ({'exists' if path.exists() else 'missing'})",
    }.items()})
