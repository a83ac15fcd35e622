"""`vitcore train | bench | report | plugins | env`. Bad input ends in one line naming the value and the
choices. The options are vitcore.options'; the bench's console lines are vitcore.console's."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import time
from pathlib import Path

from vitcore import (
    VitcoreError,
    analysis,
    console,
    gating,
    options,
    plugins,
    points,
    preflight,
    report,
    results,
)
from vitcore.config import RunConfig, parse_options
from vitcore.env import environment
from vitcore.model import get_preset

# Commands that measure import torch (2.4 s measured here) and colossalai (8.1 s) inside their
# function (launch, bench, reference, timing, train), so that `--help`, bad-input errors and
# `vitcore report` answer at once.


def build_parser():
    return options.build_parser()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "bench": cmd_bench, "report": cmd_report, "plugins": cmd_plugins,
                "env": cmd_env, "ab": cmd_ab}[args.cmd](args)
    except VitcoreError as e:
        first = str(e).strip().splitlines()
        msg = first[0] if len(first) == 1 else str(e).strip()
        print(f"vitcore: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitcore: interrupted; finished points are kept", file=sys.stderr)
        return 130


def _default_model(args) -> str:
    if args.model:
        return args.model
    import torch  # 2.4 s: only when no --model was given

    return "vit-base" if args.device != "cpu" and torch.cuda.is_available() else "vit-tiny"


def cmd_train(args) -> int:
    from vitcore import launch, train  # torch and colossalai: see the note at the top

    model = _default_model(args)
    cfg = RunConfig(plugin=args.plugin, precision=args.precision, profile=args.profile, model=model,
                    dataset=args.dataset, weights=args.weights, subset=args.subset,
                    batch_size=args.batch_size, epochs=args.epochs,
                    max_steps_per_epoch=args.max_steps_per_epoch, lr=args.lr, seed=args.seed,
                    attention=args.attention, tp_size=args.tp_size, pp_size=args.pp_size,
                    world_size=args.nproc, device=args.device, checkpoint_dir=args.checkpoint_dir,
                    timeout_s=args.timeout)
    _check_runnable(cfg)
    preflight.check_train(args, cfg)
    hist = launch.run(train.finetune, cfg, None, sys.stderr.isatty(), world_size=cfg.world_size,
                      device=cfg.device, timeout_s=cfg.timeout_s)[0]
    hist["environment"] = environment()
    if args.out:
        results.write_json(args.out, hist)
        print(f"[vitcore] history written to {args.out}")
    if hist["status"] != "ok":
        print(f"vitcore: error: {hist['error']}", file=sys.stderr)
        return 1
    return 0


def _check_runnable(cfg) -> None:
    from vitcore import launch  # torch: see the note at the top

    reason = plugins.unrunnable_reason(cfg.spec, cfg.precision, cfg.world_size, launch.resolve_device(cfg.device))
    if reason:
        raise VitcoreError(f"plugin {cfg.plugin!r} with {cfg.precision} {reason}; CPU-capable: {preflight.cpu_capable()}")


def _plan_bench(args, profiles, device, model):
    from vitcore import bench, reference  # torch and colossalai: see the note at the top

    groups, skipped, seen = [], [], set()
    for prof in profiles:
        for nproc in args.nproc:
            g, s = bench.plan(args.plugins, args.batch_sizes, args.precisions, profile=prof, model=model,
                              world_size=nproc, device=device, ablate=args.ablate,
                              options=parse_options(args.options))
            # an entry that needs more processes than asked runs at its minimum, once
            g = [grp for grp in g if (k := bench.group_key(grp)) not in seen and not seen.add(k)]
            groups, skipped = groups + g, skipped + [x for x in s if x not in skipped]
    if args.reference:
        selected = {s.name for s in plugins.select(args.plugins)}
        ref_groups, ref_skipped = reference.plan(args.batch_sizes, model=model, device=device,
                                                 twins_of=selected if "fast" in profiles else ())
        groups, skipped = ref_groups + groups, ref_skipped + skipped
    return groups, skipped


def cmd_bench(args) -> int:
    """With --json, everything but the points goes to stderr; they follow on stdout, one JSON line each."""
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr if args.json else stdout):
        rc, rows = _bench(args)
    if args.json:
        for p in rows:
            stdout.write(json.dumps(p, sort_keys=True) + "\n")
        stdout.flush()
    return rc


def _bench(args) -> tuple[int, list[dict]]:
    started = time.monotonic()
    preflight.check_bench(args)
    warning_log = console.WarningLog(verbose=args.verbose)  # colossalai's import-time warnings, below
    from vitcore import bench, launch  # torch and colossalai: see the note at the top
    from vitcore.timing import Timing

    profiles = options.names(args.profile)
    device = launch.resolve_device(args.device)
    model = _default_model(args)
    groups, skipped = _plan_bench(args, profiles, device, model)
    preflight.check_plan(groups, skipped)
    planned = {bench.group_key([c])[0] for g in groups for c in g}
    baseline = gating.load_baseline(args, planned=planned)
    if skipped:
        names = ", ".join(f"{s['plugin']} {s['precision'] or ''}".strip() for s in skipped)
        print(f"[vitcore] skipped {len(skipped)} entries that cannot run here (reasons in the report): {names}",
              file=sys.stderr)
    timing = Timing(warmup=args.warmup, steps=args.steps, repeats=args.repeats, min_window_s=args.min_window,
                    trace_dir=os.path.join(args.out, "traces") if args.trace else None,
                    inject_device_pct=args.inject_device_pct, inject_host_pct=args.inject_host_pct)
    reused = preflight.claim_out(args.out, resume=args.resume, run=_run_record(args, profiles, model))
    log = warning_log.attach(args.out)
    before = {points.key(p) for p in results.read_points(os.path.join(args.out, "points.jsonl"))}
    measured = bench.run_matrix(groups, timing, args.out, resume=reused, progress=True, processes=args.processes,
                                output=launch.WorkerOutput(str(log), args.verbose), stream=sys.stderr)
    if baseline is not None and args.until_decided:
        measured = gating.until_decided(args, groups, timing, measured, baseline)
    results.write_json(os.path.join(args.out, "skipped.json"), skipped)
    with open(log, "a") as f:
        _print_points(measured, file=f)
    if args.verbose:
        _print_points(measured, file=sys.stderr)
    if args.update_budgets:  # this run's planned points: measured now, or resumed and missing from the
        # budget file or newer than their entry (an interrupted recording); else they keep their entries
        gating.update_budgets(args.update_budgets, [p for p in measured if points.key(p) in planned and (
            points.key(p) not in before or not gating.has_budget(args.update_budgets, p))])
    history = _finetune(args, device, model) if args.finetune else None
    rc = gating.report_and_gate(args, measured, skipped, history, baseline)
    failed = [p for p in measured if p.get("status") not in ("ok", "oom")]
    for p in failed:  # an OOM is a result; an error is not
        print(f"vitcore: error: {points.key_text(p)}: {(p.get('error') or p['status']).splitlines()[-1][:300]}",
              file=sys.stderr)
    rows = analysis.enrich(measured)
    if baseline is None:  # the report's summary; with --compare the gate's lines above say it
        verdicts = gating.budget_verdicts(args.budgets, rows)[0]
        print(console.report_line(analysis.summary(rows, verdicts, points.key)), file=sys.stderr)
    reused_n = sum(points.key(p) in before for p in measured)
    print(console.summary(measured, reused_n, time.monotonic() - started, args.out), file=sys.stderr)
    return rc or (1 if failed else 0), rows


def _run_record(args, profiles, model) -> dict:
    """What OUT/run.json records, and what --resume compares: the code and the settings that change
    how a point is measured."""
    settings = {"steps": args.steps, "repeats": args.repeats, "warmup": args.warmup, "min_window_s": args.min_window,
                "profile": ",".join(profiles), "model": model, "processes": args.processes, "trace": args.trace,
                "inject_device_pct": args.inject_device_pct, "inject_host_pct": args.inject_host_pct}
    return {"code": results.code_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": settings}


def _finetune(args, device, model):
    """The study's fine-tuning (gemini on a GPU), at the model preset's recipe."""
    from vitcore import launch, train  # torch and colossalai: see the note at the top

    gpu = device == "cuda"
    plugin = "gemini" if gpu else "torch_ddp"  # gemini needs CUDA; the study fine-tuned with it
    if not gpu:
        print("[vitcore] fine-tuning with torch_ddp: gemini needs a CUDA GPU", file=sys.stderr)
    recipe = get_preset(model).recipe
    # On a CPU: 1,500 images of the tiny preset, about 20 s.
    cfg = RunConfig(plugin=plugin, profile=options.names(args.profile)[0], model=model, dataset=args.dataset or "auto",
                    subset=None if gpu else 1500, epochs=args.finetune_epochs or recipe.epochs, device=device,
                    batch_size=recipe.batch_size)
    hist = launch.run(train.finetune, cfg, None, False, device=device, timeout_s=cfg.timeout_s)[0]
    results.write_json(os.path.join(args.out, "finetune.json"), hist)
    return hist


def cmd_report(args) -> int:
    preflight.check_report(args)
    rows = analysis.perf_points([p for f in args.results for p in results.load(f, skip_bad=args.skip_bad)])
    skipped = []
    for f in args.results:
        side = os.path.join(os.path.dirname(f), "skipped.json")
        if os.path.exists(side):
            skipped += json.loads(Path(side).read_text())
    history = json.loads(Path(args.history).read_text()) if args.history else None
    baseline = gating.load_baseline(args, planned={points.key(p) for p in rows},
                              device=points.device_key(rows[0]) if rows else None)
    if args.markdown:
        print(report.summary_markdown(rows))
    return gating.report_and_gate(args, rows, skipped, history, baseline)


def cmd_ab(args) -> int:
    from vitcore import ab  # git and subprocesses; torch only once they have run

    return ab.run(args)


def cmd_plugins(args) -> int:
    """The registry as a table; 'here': the precisions that run on this machine at the entry's minimum
    world size, and why the others do not (plugins.unrunnable_reason)."""
    preflight.check_device(args.device)
    from vitcore import launch  # torch: whether a GPU is here

    device = launch.resolve_device(args.device)
    rows = [("name", "family", "precisions", "min GPUs", f"runs here ({device})")]
    for spec in plugins.REGISTRY.values():
        why = {p: plugins.unrunnable_reason(spec, p, spec.min_world_size, device) for p in spec.precisions}
        runs = [p for p, reason in why.items() if reason is None]
        notes = sorted({reason for reason in why.values() if reason})
        here = ("yes: " + "/".join(runs) if runs else "no") + ("; " + "; ".join(
            f"{'/'.join(p for p, r in why.items() if r == n)} {n}" for n in notes) if notes else "")
        rows.append((spec.name, spec.family, "/".join(spec.precisions), str(spec.min_world_size), here))
    _print_table(rows)
    return 0


def cmd_env(args) -> int:
    """The device identity budgets and baselines are keyed by, and the budget file that applies."""
    from vitcore import budget_files  # light: no torch

    env = environment()
    path = budget_files.budget_path(args.budgets, env)
    state = "exists" if path.is_file() else "missing: no budgets for this device; bench --update-budgets records them"
    rows = [("device", env["device"]), ("device identity", points.device_key(env)),
            ("torch", env["torch"]), ("cuda", env["cuda"] or "none (CPU build)"),
            ("colossalai", env["colossalai"] or "not installed"),
            ("transformers", env["transformers"] or "not installed"), ("python", env["python"]),
            ("vitcore", options.version_text().removeprefix("vitcore ")),
            ("budget file", f"{path} ({state})")]
    _print_table(rows, header=False)
    return 0


def _print_table(rows, header: bool = True) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=False)) + "  " + str(row[-1]))
        if header and n == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(str(row[-1])))


def _print_points(rows, file=None) -> None:
    """The schema's console columns (numbers right-aligned), then the status: the whole run's table,
    written to OUT/bench.log after the run (and shown with --verbose)."""
    cols = points.console_fields()

    def cell(f, text):
        return f"{text:>{f.console}}" if f.numeric else f"{text:<{f.console}}"

    print("".join(cell(f, f.short) for f in cols) + "  status", file=file)
    for p in rows:
        print("".join(cell(f, f.format(p.get(f.name)) or "-") for f in cols) + f"  {p['status']}", file=file)


if __name__ == "__main__":
    sys.exit(main())
