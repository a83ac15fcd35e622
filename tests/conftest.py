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
    """GPU-tier observations of the session, written atomically to --results-out at the end."""

    def __init__(self):
        self.rows = []

    def add(self, kind: str, row: dict):
        self.rows.append({"test": kind} | row)


@pytest.fixture(scope="session")
def gpu_results(request):
    import os

    from vitcore.env import environment
    from vitcore.results import write_json

    rec = GpuResults()
    yield rec
    out = request.config.getoption("--results-out")
    if out and rec.rows:
        write_json(os.path.join(out, "gpu-results.json"), {"environment": environment(), "results": rec.rows})


def pytest_generate_tests(metafunc):
    if "perf_batch_size" in metafunc.fixturenames:
        sizes = [int(x) for x in metafunc.config.getoption("--perf-batch-sizes").split(",")]
        metafunc.parametrize("perf_batch_size", sizes, ids=[f"bs{b}" for b in sizes])
