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
