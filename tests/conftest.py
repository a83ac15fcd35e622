import os

import pytest
import torch
from torch.utils.data import default_collate

from tests.support.gpu import computed_once, fresh_gpu_workers, gpu_share, needs_gpus_alone, worker_output
from tests.support.options import suite
from tests.support.runs import PARITY, PARITY_STEPS
from tests.support.xdist import XDIST_CHANNELS
from vitcore.inputs import data
from vitcore.processes import launch, worker_pool
from vitcore.reporting import analysis, report
from vitcore.spec.config import RunConfig
from vitcore.spec.env import environment
from vitcore.store.results import append_point


@pytest.fixture(scope="session")
def embedded_1500():
    return data.load("embedded", subset=1500)


# --- GPU tiers (tests/test_gpu.py, tests/test_multigpu.py) ---
@pytest.fixture(scope="session")
def parity_data():
    return data.load("embedded", subset=240)


@pytest.fixture(scope="session")
def probe(parity_data):
    ds = data.Preprocessed(parity_data.test, data.image_processor(32))
    return default_collate([ds[i] for i in range(16)])


@pytest.fixture(scope="session")
def gpu_pool(pytestconfig):
    """This pytest process's (xdist worker's) long-lived GPU worker: it imports once and runs the
    correctness cases one after another, each isolated (vitcore/processes/worker_pool.py). Started at the
    first case, ended at the session's end."""
    with worker_pool.WorkerPool("cuda", output=worker_output(pytestconfig)) as pool:
        yield pool


@pytest.fixture(scope="session")
def ddp_reference(pytestconfig, parity_data, probe, gpu_pool):
    """The torch_ddp fp32 run every parity test compares with: computed once per session (by the
    first xdist worker that needs it; the others read it) for this preset, recipe, seed and steps."""
    from vitcore.training import train  # colossalai: imported where a GPU case needs it (tests/runs.run)

    cfg = RunConfig(plugin="torch_ddp", precision="fp32", device="cuda", **PARITY)
    key = (cfg, PARITY_STEPS, parity_data.source, len(parity_data.train), len(parity_data.test))
    return computed_once(pytestconfig, "ddp-reference", key, lambda: gpu_pool.run(
        train.steps_then_probe, (cfg, parity_data, PARITY_STEPS, probe), timeout_s=900))


def pytest_collection_finish(session):
    """A process that will run a single-GPU performance test starts its first fresh worker now: its
    imports (10-15 s on the H100 host) overlap the correctness tests instead of the exclusive phase.
    (The xdist controller collects nothing; a worker handed none of these tests ends it unused.)"""
    wanted = any(needs_gpus_alone(it) and it.get_closest_marker("gpu") for it in session.items)
    if wanted and not session.config.getoption("collectonly") and torch.cuda.is_available():
        fresh_gpu_workers(session.config).prestart()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """GPU-tier tests share the GPU with the session's other processes; a performance or multigpu
    test waits until none of them uses it, and this process's pooled worker leaves it first
    (gpu.gpu_share, docs/gpu.md). Held from setup to teardown, fixtures included."""
    if item.get_closest_marker("gpu") is None and item.get_closest_marker("multigpu") is None:
        return (yield)
    exclusive = needs_gpus_alone(item)
    if exclusive:  # not the performance tests' started spare: it has not touched the GPU
        worker_pool.close_all(keep_unused=True)
    with gpu_share(item.config, exclusive=exclusive):
        return (yield)


@pytest.fixture
def cpu_process_group():
    launch.init_process_group(0, 1, launch.free_port(), "cpu")
    yield
    launch.destroy_process_group()


class GpuResults:
    """GPU-tier observations, appended one line per test to --results-out/gpu-results.jsonl as
    they finish (safe under pytest-xdist workers, and a killed session keeps what it measured)."""

    def __init__(self, folder):
        self.folder = folder
        self.rows = []  # this session's rows, charted into the pytest-html summary

    def add(self, kind: str, row: dict):
        row = environment() | row | {"test": kind}
        self.rows.append(row)
        if self.folder:
            append_point(os.path.join(self.folder, "gpu-results.jsonl"), row)


GPU_RESULTS = pytest.StashKey[GpuResults]()


@pytest.fixture(scope="session")
def gpu_results(pytestconfig) -> GpuResults:
    if GPU_RESULTS not in pytestconfig.stash:
        pytestconfig.stash[GPU_RESULTS] = GpuResults(suite(pytestconfig).results_out)
    return pytestconfig.stash[GPU_RESULTS]


def _gpu_rows(config):
    return config.stash[GPU_RESULTS].rows if GPU_RESULTS in config.stash else None


def _add_gpu_rows(config, rows):
    if GPU_RESULTS not in config.stash:
        config.stash[GPU_RESULTS] = GpuResults(None)  # the workers wrote --results-out already
    config.stash[GPU_RESULTS].rows += rows


# a worker's result rows go to the controller, which writes the HTML report
XDIST_CHANNELS["vitcore_gpu_rows"] = (_gpu_rows, _add_gpu_rows)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix, summary, postfix, session):
    """The GPU run's pytest-html report carries the bench report's charts (same code)."""
    results = session.config.stash.get(GPU_RESULTS, None)
    perf = analysis.perf_points(results.rows) if results else []
    for title, metric, unit in (("throughput", "images_per_s", "images / s per GPU"),
                                ("peak allocated memory", "peak_mem_allocated_gib", "GiB")):
        src = report.chart_vs_batch(perf, metric, unit, f"{title} vs batch size") if perf else None
        if src:
            postfix.append(f"<h2>{title}</h2><img class='chart' src='{src}' style='max-width:100%'>")
