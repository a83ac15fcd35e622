"""The `vitcore` command on each documented setup (issue 26, item 5): `python -m vitcore`, and the
offline GPU host's install of the wheelhouse with `pip install --target` (scripts/wheelhouse.sh
builds vitcore's own wheel, whose script lands in TARGET/bin), with the checkout first on
PYTHONPATH so that its code, not the wheel's copy, runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_python_m_vitcore_is_the_command():
    p = subprocess.run([sys.executable, "-m", "vitcore", "plugins", "--device", "cpu"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0 and "torch_ddp" in p.stdout, p.stderr[-3000:]


@pytest.mark.slow
def test_the_wheelhouse_install_puts_vitcore_on_path_and_the_checkout_wins(tmp_path):
    """What scripts/wheelhouse.sh does for vitcore (a wheel of pyproject.toml, README.md and
    vitcore/), installed as the README installs the wheelhouse, then `vitcore` as typed there.
    The build here is offline (--no-build-isolation, this environment's setuptools)."""
    pytest.importorskip("setuptools", minversion="68")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "vitcore", src / "vitcore", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "whl", src],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = sorted((tmp_path / "whl").glob("vitcore-*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-index", "--no-deps", "--target", site, *wheels],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # the setup line: export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "PATH": f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    assert shutil.which("vitcore", path=env["PATH"]) == str(site / "bin" / "vitcore")
    version = subprocess.run(["vitcore", "--version"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert version.returncode == 0 and version.stdout.startswith("vitcore "), version.stderr[-3000:]
    where = subprocess.run([sys.executable, "-c", "import vitcore; print(vitcore.__file__)"], capture_output=True,
                           text=True, timeout=120, cwd=ROOT, env=env)
    assert where.stdout.strip() == str(ROOT / "vitcore" / "__init__.py")  # the checkout, not the wheel's copy


def test_the_scripts_build_the_wheel_and_set_path_as_the_setup_line():
    wheelhouse = (ROOT / "scripts" / "wheelhouse.sh").read_text()
    assert 'cp -r "$root/pyproject.toml" "$root/README.md" "$root/vitcore" "$src/"' in wheelhouse
    assert 'python3 -m pip wheel -q --no-deps -w "$dest" "$src"' in wheelhouse
    device_run = (ROOT / "scripts" / "device_run.sh").read_text()
    assert "export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH " in device_run
    assert "--target /tmp/site .whl/*.whl" in device_run
