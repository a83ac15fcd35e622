import pytest


@pytest.fixture(scope="session")
def embedded_1500():
    from vitcore import data

    return data.load("embedded", subset=1500)


# --- GPU tiers (tests/test_gpu.py, tests/test_multigpu.py) ---
@pytest.fixture(scope="session")
def parity_data():
    from vitcore import data

    return data.load("embedded", subset=240)


@pytest.fixture(scope="session")
def probe(parity_data):
    from torch.utils.data import default_collate

    from vitcore import data

    ds = data.Preprocessed(parity_data.test, data.image_processor(32))
    return default_collate([ds[i] for i in range(16)])


@pytest.fixture(scope="session")
def ddp_reference(parity_data, probe):
    from tests.helpers import PARITY, PARITY_STEPS
    from vitcore import launch, train
    from vitcore.config import RunConfig

    cfg = RunConfig(plugin="torch_ddp", precision="fp32", device="cuda", **PARITY)
    return launch.spawn(train.steps_then_probe, (cfg, parity_data, PARITY_STEPS, probe), world_size=1,
                        device="cuda", timeout_s=900)[0]


@pytest.fixture
def cpu_process_group():
    from vitcore import launch

    launch.init_process_group(0, 1, launch.free_port(), "cpu")
    yield
    launch.destroy_process_group()


class GpuResults:
    """GPU-tier observations, appended one line per test to --results-out/gpu-results.jsonl as
    they finish (safe under pytest-xdist workers, and a killed session keeps what it measured)."""

    def __init__(self, folder):
        self.folder = folder
        self.rows = []  # this process's rows, charted into the pytest-html summary

    def add(self, kind: str, row: dict):
        import os

        from vitcore.env import environment
        from vitcore.results import append_point

        row = environment() | row | {"test": kind}
        self.rows.append(row)
        if self.folder:
            append_point(os.path.join(self.folder, "gpu-results.jsonl"), row)


_SESSION_RESULTS = GpuResults(None)


@pytest.fixture(scope="session")
def gpu_results(request):
    _SESSION_RESULTS.folder = request.config.getoption("--results-out")
    return _SESSION_RESULTS


def pytest_html_results_summary(prefix, summary, postfix):
    """The GPU run's pytest-html report carries the bench report's charts (same code)."""
    from vitcore import report

    perf = report.perf_points(_SESSION_RESULTS.rows)
    for title, metric, unit in (("throughput", "images_per_s", "images / s per GPU"),
                                ("peak allocated memory", "peak_mem_allocated_gib", "GiB")):
        src = report.chart_vs_batch(perf, metric, unit, f"{title} vs batch size") if perf else None
        if src:
            postfix.append(f"<h2>{title}</h2><img class='chart' src='{src}' style='max-width:100%'>")
