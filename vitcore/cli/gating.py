"""The command line's gate flow: load and check a baseline before measuring, re-measure undecided
points, judge every point, print the verdicts and write the report. The rule itself is
vitcore.gate.budgets; the statistics vitcore.gate.stats."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from vitcore import VitcoreError
from vitcore.gate import budget_files, budgets
from vitcore.reporting import analysis, report
from vitcore.spec import points
from vitcore.spec.env import environment
from vitcore.store import results

if TYPE_CHECKING:
    from vitcore.cli.typed import GateOptions


def load_baseline(gate: GateOptions, planned=None, device=None) -> list[dict] | None:
    """The --compare/--baseline file, checked before anything is measured (budgets.check_baseline);
    device: the device the compared points come from (default: this machine's)."""
    path = gate.baseline
    if not path:
        return None
    try:
        baseline = analysis.perf_points(results.load(path))  # as the compared rows are
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VitcoreError(f"baseline {path} cannot be read: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    device = device or points.device_key(environment())
    budgets.check_baseline(baseline, source=path, device=device, planned=planned, allow_missing=gate.allow_missing)
    return baseline


def until_decided(gate: GateOptions, out, groups, timing, measured, baseline) -> list[dict]:
    """Re-measure the groups holding a point with an inconclusive throughput verdict, one more
    process at a time, pooling windows, until decided or N more processes."""
    from vitcore.measure import bench  # torch and colossalai (10 s): only when re-measuring

    for _ in range(gate.until_decided):
        verdicts = budgets.compare_runs(measured, baseline, gate.tolerances, allow_missing=True).verdicts
        open_keys = {k for k, vs in verdicts.items() if any(v.outcome == "inconclusive" for v in vs)}
        todo = [g for g in groups if open_keys & set(bench.group_key(g))]
        if not todo:
            break
        print(f"[vitcore] {len(open_keys)} inconclusive point(s): one more process each", file=sys.stderr)
        measured = bench.remeasure(todo, timing, out)
    return measured


def report_and_gate(gate: GateOptions, folder, out, rows, skipped, history, baseline) -> int:
    """The report in `out` with each row's verdicts: against `baseline` where there is one (the
    exit code: 1 on a regression), else against the budgets in `folder`."""
    rows = analysis.enrich(rows)
    verdicts, notes, rc = budget_verdicts(folder, rows)
    if baseline is not None:
        path = gate.baseline
        rule = ",".join(f"{g}:{t:.0%}" for g, t in gate.tolerances.items())
        result = budgets.compare_runs(rows, baseline, gate.tolerances, allow_missing=gate.allow_missing)
        verdicts = {k: budgets.verdict_cell(v) for k, v in result.verdicts.items()}
        notes = [f"verdicts against the baseline {path} ({rule})"]
        for what, lines in (("update the baseline", result.improvements), ("inconclusive", result.inconclusive),
                            ("not in the baseline", result.new)):
            for line in lines:
                print(f"[vitcore] {what}: {line}")
        if result.failed(gate.strict):
            print(f"[vitcore] REGRESSIONS against {path} ({rule}):", file=sys.stderr)
            for line in result.regressions + (result.improvements if gate.strict else []):
                print(f"  {line}", file=sys.stderr)
            rc = 1
        else:
            print(f"[vitcore] no regressions against {path} ({rule}); {len(result.inconclusive)} inconclusive")
    path = report.write_all(out, rows, skipped=skipped, history=history, verdicts=verdicts, baseline=baseline,
                            notes=notes)
    print(f"[vitcore] report: {path} (+ points.json, points.csv)")
    return rc


def budget_verdicts(folder, rows) -> tuple[dict, list[str], int]:
    """Each point's verdicts against the budgets (this device's entry; portable metrics also another
    device's of the same architecture), for the report (the exit code is the gate's alone); where a
    metric has no budget, the note says what is missing and how to record it."""
    verdicts, notes = {}, []
    for p in rows:
        cells = []
        for group in points.gate_groups():
            try:
                _, vs, _ = budget_files.check(folder, p, group)
            except budget_files.NoBudget as e:
                if str(e) not in notes:
                    notes.append(str(e))
                continue
            cells += vs
        verdicts[points.key(p)] = budgets.verdict_cell(cells)
    return verdicts, notes or [f"verdicts against the budgets in {folder}"], 0


def has_budget(folder, point) -> bool:
    """Whether this device's budget file holds an entry from `point` itself or from a later recording,
    with every gated value the point measured (an entry of an older version lacks device time). A
    resumed point recorded earlier than its entry keeps that entry; one measured after it replaces it
    (a recording split over device calls whose first budget file was not kept left entries of an
    older record beside the new one)."""
    try:
        entry = budget_files.lookup(budget_files.load(folder, point), point)
    except budget_files.NoBudget:
        return False
    if ((entry.get("source") or {}).get("date") or "") < (point.get("date") or ""):
        return False
    return all(entry.get(f.name) is not None for f in points.gated() if point.get(f.name) is not None)


def update_budgets(folder, rows, *, allow_invariant_change: bool = False) -> int:
    """Record each row as its entry's budget, printing what changed metric by metric; 1 where any was
    refused (an invariant contradicting another device's of the same architecture, a failed point)."""
    refused = 0
    for p in rows:
        try:
            path, _, review = budget_files.update(folder, p, allow_invariant_change=allow_invariant_change)
            print(f"[vitcore] budget {points.key_text(p)} -> {path}: {'; '.join(review)}")
        except VitcoreError as e:
            print(f"[vitcore] budget refused: {e}", file=sys.stderr)
            refused += 1
    return 1 if refused else 0
