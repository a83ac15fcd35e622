"""Made-up points, budget devices and result folders that several test files build on."""

from __future__ import annotations

from vitcore import files
from vitcore.store import results


def windows(center, n=6, spread=0.01):
    """n samples (per-process medians) evenly spread +-spread around center (deterministic)."""
    return [center * (1 + spread * (2 * i / (n - 1) - 1)) for i in range(n)]


def point(ips=1000.0, alloc=4.0, reserved=5.0, device_ms=50.0, launches=1285.0, spread=0.01, peak=4.5,
          peak_reserved=6.0, **kw):
    """A gemini bf16 bs128 point on an H100. alloc: the gated steady allocated memory; reserved: the
    steady reserved one (shown, never gated); peak / peak_reserved: the whole run's (not gated)."""
    return {"plugin": "gemini", "precision": "bf16", "profile": "fast", "model": "vit-base",
            "world_size": 1, "batch_size": 128, "status": "ok", "images_per_s": ips, "spread": spread,
            "images_per_s_process_medians": windows(ips, spread=spread / 2), "processes": 6,
            "device_ms_per_step": device_ms, "launches_per_step": launches,
            "steady_mem_allocated_gib": alloc, "steady_mem_reserved_gib": reserved,
            "peak_mem_allocated_gib": peak, "peak_mem_reserved_gib": peak_reserved, "repeats": 5,
            "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "torch": "2.11.0+cu130", "cuda": "13.0",
            "gpu_compute_capability": "9.0", "gpu_sm_count": 132, "colossalai": "0.5.0", "transformers": "4.51.3",
            "date": "2026-11-24", "git_sha": "abc", "dataset": "d", "weights": "w"} | kw


# --- the gate: a run against a baseline run, failing closed -------------------------------------
DEVICE = "nvidia-h100-80gb-hbm3-x1-torch2.11.0-cuda13.0"


def run_point(bs, status="ok", **kw):
    return {"plugin": "torch_ddp", "precision": "fp32", "profile": "fast", "model": "vit-tiny", "world_size": 1,
            "batch_size": bs, "status": status, "torch": "2.13.0", "gpu_name": None, "gpu_count": 0, "cuda": None, **kw}


# --- what --resume reuses ------------------------------------------------------------------------------------
RUN = {"code": "abc123", "date": "2026-11-25T10:00:00+00:00",
       "settings": {"steps": 20, "repeats": 5, "warmup": 5, "min_window_s": 1.0, "profile": "fast", "model": "vit-tiny"}}


def run_folder(tmp_path, run=RUN):
    results.append_point(tmp_path / "points.jsonl", run_point(8))
    results.append_point(tmp_path / "points.jsonl", run_point(16, "error"))
    if run is not None:
        files.write_json(tmp_path / results.RUN_NAME, run)
    return tmp_path
