"""The environment a result was measured in: device, versions, git sha, date; peak FLOP rates."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# Dense bf16 tensor-core peak per GPU, FLOP/s (vendor datasheets, without sparsity).
PEAK_BF16_FLOPS = (
    (r"H200", 989e12),
    (r"H100.*(SXM|HBM3)|H100 80GB HBM3", 989e12),
    (r"H100.*PCIe", 756e12),
    (r"H100", 989e12),
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"A10G?\b", 125e12),
)


def peak_flops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, gpu_name):
            return flops
    return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_sha() -> str:
    """VITCORE_GIT_SHA wins (a copied tree on a GPU host has no .git), then `git rev-parse`. The
    timeout is generous: on a loaded 2-core machine `git status` took seconds, and an "unknown" sha
    makes --resume start fresh."""
    if os.environ.get("VITCORE_GIT_SHA"):
        return os.environ["VITCORE_GIT_SHA"]
    try:
        root = Path(__file__).resolve().parents[2]  # vitcore/spec/env.py -> the checkout
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=60).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=60).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(cuda: bool = True) -> dict:
    """Where this process runs. cuda=False never opens a CUDA context (an xdist controller whose
    workers own the GPU): the GPU fields are then None."""
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    gpu = torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else None
    props = torch.cuda.get_device_properties(0) if gpu else None
    return {
        "device": gpu or f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "gpu_name": gpu,
        "gpu_count": torch.cuda.device_count() if gpu else 0,
        # the architecture portable invariants are keyed by (arch_identity): H100 and H200 are both sm_90, 132 SMs
        "gpu_compute_capability": f"{props.major}.{props.minor}" if props else None,
        "gpu_sm_count": props.multi_processor_count if props else None,
        "driver": _driver(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "colossalai": _version("colossalai"),
        "transformers": _version("transformers"),
        "datasets": _version("datasets"),
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "peak_bf16_tflops": (peak_flops(gpu) or 0) / 1e12 or None,
        "command": command_line(),
    }


def command_line() -> str:
    """The command that started this process (spawned workers inherit the parent's argv), with
    the suite's own entry points spelled as the user types them."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if sys.argv and Path(sys.argv[0]).parent.name == "vitcore" and prog in ("cli.py", "__main__.py"):
        prog = "python -m vitcore.cli" if prog == "cli.py" else "python -m vitcore"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def device_identity(env: dict) -> str:
    """The key budgets are stored under: GPU model and count, torch and CUDA versions."""
    gpu = env.get("gpu_name") or "cpu"
    raw = f"{gpu}-x{env.get('gpu_count') or 1}-torch{env['torch'].split('+')[0]}-cuda{env.get('cuda') or 'none'}"
    return re.sub(r"[^A-Za-z0-9.]+", "-", raw).strip("-").lower()


ARCH_FIELDS = ("gpu_compute_capability", "gpu_sm_count", "torch", "cuda", "colossalai", "transformers")


def arch_identity(env: dict) -> str | None:
    """The key portable invariants (launches per step, allocated memory) are shared under: the GPU's
    architecture (compute capability and SM count: cuBLAS picks kernels by them) and the software
    stack that chooses the kernels and the allocations. None for a CPU, or a point recorded before
    these fields existed: such a point shares invariants with no other device."""
    if not env.get("gpu_name") or any(not env.get(k) for k in ARCH_FIELDS):
        return None
    cc = str(env["gpu_compute_capability"]).replace(".", "")
    raw = (f"sm{cc}-{env['gpu_sm_count']}sms-torch{env['torch'].split('+')[0]}-cuda{env['cuda']}"
           f"-colossalai{env['colossalai']}-transformers{env['transformers']}")
    return re.sub(r"[^A-Za-z0-9.]+", "-", raw).lower()
