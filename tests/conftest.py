import pytest


@pytest.fixture(scope="session")
def embedded_1500():
    from vitcore import data

    return data.load("embedded", subset=1500)


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

    def add(self, kind: str, row: dict):
        import os

        from vitcore.env import environment
        from vitcore.results import append_point

        if self.folder:
            append_point(os.path.join(self.folder, "gpu-results.jsonl"), environment() | row | {"test": kind})


@pytest.fixture(scope="session")
def gpu_results(request):
    return GpuResults(request.config.getoption("--results-out"))
