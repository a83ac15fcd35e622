"""The GPU tier's performance measurements and their budget checks (tests/test_gpu.py,
tests/test_multigpu.py): measured once per session in fresh workers, judged by the one rule."""

from __future__ import annotations

import pytest

from tests.support.gpu import computed_once, fresh_gpu_workers, worker_output
from tests.support.options import suite
from vitcore import VitcoreError
from vitcore.gate import budget_files
from vitcore.measure.timing import Timing, pool
from vitcore.processes import launch
from vitcore.spec.points import key_text


def performance_points(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    """Measure `cfgs` in perf_processes() separate processes, once per session (the invariant and
    device-time tests of one plugin share it, across xdist workers too), pooling them (timing.pool:
    each process's values kept in `observed`); with --update-budgets, record each point as this
    device's budget, printing what changed. Returns the points and the review or refusal lines."""
    o = suite(request.config)
    key = (tuple(cfgs), o.perf_steps, o.perf_repeats, o.perf_min_window, o.perf_processes, o.update_budgets,
           o.budgets, o.perf_inject_device_pct)
    return computed_once(request.config, "performance", key, lambda: _measure(cfgs, request, gpu_results))


def _measure(cfgs, request, gpu_results) -> tuple[list[dict], list[str]]:
    from vitcore.measure.bench import measure_group  # imports colossalai: see run()

    c0 = cfgs[0]
    o = suite(request.config)
    timing = Timing(warmup=5, steps=o.perf_steps, repeats=o.perf_repeats, min_window_s=o.perf_min_window,
                    inject_device_pct=o.perf_inject_device_pct)
    args = (cfgs, timing, None)
    if c0.world_size == 1:  # a fresh worker, already imported (start-up was 10-15 s of each test)
        fresh = fresh_gpu_workers(request.config)

        def once():
            return fresh.run(measure_group, args, timeout_s=900)
    else:
        def once():
            return launch.spawn(measure_group, args, world_size=c0.world_size, device="cuda", timeout_s=900,
                                output=worker_output(request.config))[0]
    runs = [once() for _ in range(o.perf_processes)]
    points = [pool(list(same)) for same in zip(*runs, strict=True)]
    refused, review = [], []
    for point in points:
        gpu_results.add("performance", point)
        print(f"{c0.plugin} {c0.precision} ws={c0.world_size} bs={point['batch_size']}: "
              f"{point.get('images_per_s') or 0:.1f} img/s per GPU (spread {point.get('spread') or 0:.1%}, "
              f"{point.get('processes')} processes), device {point.get('device_ms_per_step') or 0:.2f} ms/step, "
              f"{point.get('launches_per_step') or 0:.0f} launches/step, alloc "
              f"{point.get('steady_mem_allocated_gib') or 0:.3f} GiB, status {point['status']}")
        if o.update_budgets:
            try:
                path, _, lines = budget_files.update(o.budgets, point, allow_invariant_change=o.allow_invariant_change)
                review.append(f"{key_text(point)} -> {path.name}: {'; '.join(lines)}")
            except VitcoreError as e:
                refused.append(f"budget not recorded: {e}")
    return points, refused + review


def judge_point(folder, point, groups) -> tuple[list, list[str]]:
    """(verdicts, missing): each gate group's verdicts against its reference (budget_files.check:
    this device's entry, or for portable groups another device's of the same architecture), and the
    NoBudget reasons of the groups that have none."""
    verdicts, missing = [], []
    for group in groups:
        try:
            _, vs, device = budget_files.check(folder, point, group)
        except budget_files.NoBudget as e:
            missing.append(str(e))
            continue
        verdicts += [(v, device) for v in vs]
    return verdicts, missing


def check_budgets(cfgs, request, gpu_results, budget_checks, groups: tuple[str, ...],
                  reported: tuple[str, ...] = ()) -> None:
    """Every point's verdicts in the gate `groups` (budgets.judge, the rule `vitcore bench --compare`
    uses too). Failing verdicts (regressed; improved on a two-sided invariant: a stale budget) fail
    the test, all of them together, and the session's are listed at its end (`budget_checks`). A
    group with no budget fails closed, naming the device and the command that records it;
    --allow-missing-budgets makes that a skip. An inconclusive device time (a throttled clock) fails
    too: re-measure at full clock. `reported` groups (wall time: one process a side cannot decide it)
    are judged for the session summary only. With --update-budgets: record instead."""
    points, lines = performance_points(cfgs, request, gpu_results)
    o = suite(request.config)
    if o.update_budgets:
        print("\n".join(lines))
        refused = [ln for ln in lines if ln.startswith("budget not recorded")]
        assert not refused, "; ".join(refused)
        return
    folder = o.budgets
    problems, missing = [], []
    for point in points:
        verdicts, lacking = judge_point(folder, point, groups)
        problems += budget_checks.record(point, groups, verdicts, lacking)
        missing += [m for m in lacking if m not in missing]
        print("\n".join(f"{v} (budget of {dev})" for v, dev in verdicts))
        if reported:
            budget_checks.report(*judge_point(folder, point, reported))
    assert not problems, "; ".join(problems)
    if missing:
        if o.allow_missing_budgets:
            pytest.skip("--allow-missing-budgets: " + budget_files.join_missing(missing))
        pytest.fail(budget_files.join_missing(missing), pytrace=False)
