"""What a point says about memory beyond its own peak: the memory earlier points of its process
left allocated when it started, and each process's steady peak where processes are pooled (the
two are what tell gemini bf16 bs128's two memory states apart: docs/gate.md)."""

from __future__ import annotations

import torch

from vitcore.measure import bench, timing
from vitcore.measure.timing import Timing
from vitcore.spec.config import RunConfig


def test_each_point_records_the_memory_held_when_it_started(monkeypatch, tmp_path, cpu_process_group):
    items = [RunConfig(plugin="torch_ddp", device="cpu", batch_size=bs) for bs in (8, 16)]
    made = {cfg.batch_size: bench.skeleton(cfg, status="ok") for cfg in items}  # before CUDA is faked
    held = iter([0, 512 * 2**20])  # bytes allocated before the first and the second point
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: next(held))
    monkeypatch.setattr(bench, "measure", lambda cfg, t: dict(made[cfg.batch_size]))
    points = bench.measure_group(items, Timing(), str(tmp_path / "points.jsonl"))
    assert [p["mem_held_at_start_gib"] for p in points] == [0.0, 0.5]


def test_off_cuda_the_held_memory_is_null(monkeypatch, tmp_path, cpu_process_group):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "measure", lambda cfg, t: bench.skeleton(cfg, status="ok"))
    points = bench.measure_group([RunConfig(plugin="torch_ddp", device="cpu", batch_size=8)], Timing(), None)
    assert points[0]["mem_held_at_start_gib"] is None


def _process(alloc, held):
    return {"status": "ok", "plugin": "gemini", "world_size": 1, "images_per_s": 10.0, "images_per_s_windows": [10.0],
            "images_per_s_process_medians": [10.0], "processes": 1, "step_time_s": 1.0, "mfu": None,
            "steady_mem_allocated_gib": alloc, "mem_held_at_start_gib": held}


def test_pooled_processes_keep_each_steady_peak_and_the_largest_held_memory():
    p = timing.pool([_process(9.0, 0.0), _process(9.485, 0.483), _process(9.0, 0.0)])
    assert p["steady_mem_allocated_gib"] == 9.485
    assert p["steady_mem_allocated_gib_processes"] == [9.0, 9.485, 9.0]
    assert p["mem_held_at_start_gib"] == 0.483
    again = timing.pool([p, _process(9.0, 0.0)])  # --until-decided pools a pooled point with a new process
    assert again["steady_mem_allocated_gib_processes"] == [9.0, 9.485, 9.0, 9.0]


class _Manager:
    """What GeminiManager._get_layout_info reads of its self, and a weak reference to tell it freed."""

    _comp_cuda_demand_time = 0.0

    class _chunk_manager:  # noqa: N801 - the attribute name colossalai reads
        @staticmethod
        def get_cuda_movable_chunks():
            return []


def test_release_memory_frees_what_colossalais_method_caches_hold():
    """colossalai's GeminiManager._get_layout_info is an lru_cache on the class: its key holds the
    manager (and its chunks) for the life of the process. release_memory() must let them go."""
    import gc
    import weakref

    from colossalai.zero.gemini.gemini_mgr import GeminiManager

    manager = _Manager()
    GeminiManager._get_layout_info(manager, 0, False, ())
    alive = weakref.ref(manager)
    del manager
    gc.collect()
    assert alive() is not None, "the upstream cache no longer holds its key: this test proves nothing"
    timing.release_memory()
    assert alive() is None


def test_each_point_first_settles_the_process_groups_collectives(monkeypatch, tmp_path, cpu_process_group):
    """measure_group calls settle_collectives before reading the held memory of every point (the
    NCCL shelf of the previous point's async collectives; a no-op off NCCL)."""
    calls = []
    monkeypatch.setattr(bench, "settle_collectives", lambda: calls.append("settle"))
    monkeypatch.setattr(bench, "_allocated_gib", lambda: calls.append("held"))
    monkeypatch.setattr(bench, "measure", lambda cfg, t: bench.skeleton(cfg, status="ok"))
    items = [RunConfig(plugin="torch_ddp", device="cpu", batch_size=bs) for bs in (8, 16)]
    bench.measure_group(items, Timing(), None)
    assert calls == ["settle", "held", "settle", "held"]
    timing.settle_collectives()  # gloo: returns at once
