"""`vitcore train | bench | report | plugins | env`. Bad input ends in one line naming the value and the
choices, checked before any heavy import. The parsers are vitcore.cli.options'; each command takes its
typed options (vitcore.cli.typed), built once from the namespace by `main`; the console lines are
vitcore.processes.output's, and everything that is not the suite's own goes to the run's log
(output.ThirdPartyOutput), with one line saying how much went there."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from vitcore import VitcoreError, files
from vitcore.cli import options, preflight, typed
from vitcore.inputs.model import get_preset
from vitcore.measure import progress
from vitcore.processes import output
from vitcore.reporting import analysis
from vitcore.spec import plugins, points
from vitcore.spec.config import RunConfig
from vitcore.spec.env import environment
from vitcore.store import results

# Commands that measure import torch (2.4 s measured here) and colossalai (8.1 s) inside their
# function (launch, bench, reference, timing, train), and vitcore.cli.gating / report (matplotlib, 2 s)
# where they are used, so that `--help` and bad-input errors answer at once. Those imports run in
# ThirdPartyOutput.quiet(): colossalai prints notices as it is imported.


def build_parser():
    return options.build_parser()


class RunFailed(VitcoreError):
    """A run that started and failed (exit code 1; bad input is 2)."""

    exit_code = 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    error = None
    with output.ThirdPartyOutput(verbose=args.verbose) as tp:
        try:
            with tp.quiet():  # train's RunConfig imports torch where the device may be CUDA
                opts = typed.OPTIONS[args.cmd].from_args(args)  # the one read of the namespace
            rc = {"train": cmd_train, "bench": cmd_bench, "report": cmd_report, "plugins": cmd_plugins,
                  "env": cmd_env, "ab": cmd_ab, "pretrain": cmd_pretrain}[args.cmd](opts, tp)
        except VitcoreError as e:
            first = str(e).strip().splitlines()
            error = f"vitcore: error: {first[0] if len(first) == 1 else str(e).strip()}"
            rc = getattr(e, "exit_code", 2)
        except KeyboardInterrupt:
            error, rc = "vitcore: interrupted; finished points are kept", 130
        else:  # a finished command without a log of its own (plugins, env): one in $TMPDIR
            if tp.path is None and tp.held:
                tp.attach(_tmp_log(args.cmd))
        line = tp.summary_line()
    if line:  # the error, where there is one, stays the last line
        print(line, file=sys.stderr)
    if error:
        print(error, file=sys.stderr)
    return rc


def _tmp_log(cmd: str) -> Path:
    return Path(tempfile.gettempdir()) / f"vitcore-{cmd}-{os.getpid()}.log"


def cmd_train(opts: typed.TrainOptions, tp) -> int:
    """Every option is checked before colossalai is imported: the config (typed.TrainOptions, torch
    only where the device is not cpu), the device, then the dataset (torch, datasets); then the run,
    whose failure is one line too (the traceback in the log)."""
    cfg = opts.config
    with tp.quiet():  # torch, datasets, and the dataset's own progress bars
        _check_runnable(cfg)
        preflight.check_train(opts)
        from vitcore.processes import launch  # colossalai: see the note at the top

        # heavy behind it (torch, colossalai or matplotlib): only once the arguments are valid
        from vitcore.training import train
    log = tp.attach(_train_log(opts.out))
    # a worker's bar would not be one of the suite's lines; one process draws it on a terminal
    progress = sys.stderr.isatty() and cfg.world_size == 1
    try:
        hist = launch.run(train.finetune, cfg, None, progress, world_size=cfg.world_size, device=cfg.device,
                          timeout_s=cfg.timeout_s, output=tp.worker_output(console_lines=True))[0]
    except VitcoreError:  # the suite's own one line (a worker's WorkerError names its tracebacks' log)
        raise
    except Exception as e:  # noqa: BLE001 - in this process: the traceback to the log, one line here
        tp.note(f"--- vitcore train failed:\n{traceback.format_exc()}")
        raise RunFailed(f"training failed: {launch.first_line(e)} (traceback in {log})") from None
    hist["environment"] = environment()
    if cfg.compile and not hist.get("compiled_graphs"):  # never a compiled label on an eager run, unsaid
        print(f"[vitcore] warning: torch.compile captured no graph, so this run trained eager: "
              f"{hist.get('compile_refusal') or 'dynamo recorded no reason'}", file=sys.stderr)
    if opts.out:
        files.write_json(opts.out, hist)
        print(f"[vitcore] history written to {opts.out}")
    if hist["status"] != "ok":
        raise RunFailed(hist["error"])
    return 0


def _train_log(history: str | None) -> Path:
    """Beside --out (h.json: h.log), else $TMPDIR/vitcore-train-PID.log."""
    if not history:
        return _tmp_log("train")
    out = Path(history).expanduser()
    return out.with_suffix(".log") if out.suffix != ".log" else out.with_name(out.name + ".log")


def _check_runnable(cfg) -> None:
    from vitcore.processes import launch  # torch: see the note at the top

    reason = plugins.unrunnable_reason(cfg.spec, cfg.precision, cfg.world_size, launch.resolve_device(cfg.device))
    if reason:
        raise VitcoreError(f"plugin {cfg.plugin!r} with {cfg.precision} {reason}; CPU-capable: {preflight.cpu_capable()}")


def _plan_bench(opts: typed.BenchOptions, device, model):
    from vitcore.measure import bench, reference  # torch and colossalai: see the note at the top

    groups, skipped, seen = [], [], set()
    for prof in opts.profiles:
        for nproc in opts.nproc:
            g, s = bench.plan(opts.plugins, opts.batch_sizes, opts.precisions, profile=prof, model=model,
                              world_size=nproc, device=device, ablate=opts.ablate, options=opts.set_options)
            # an entry that needs more processes than asked runs at its minimum, once
            g = [grp for grp in g if (k := bench.group_key(grp)) not in seen and not seen.add(k)]
            groups, skipped = groups + g, skipped + [x for x in s if x not in skipped]
    if opts.reference:
        selected = {s.name for s in plugins.select(opts.plugins)}
        ref_groups, ref_skipped = reference.plan(opts.batch_sizes, model=model, device=device,
                                                 twins_of=selected if "fast" in opts.profiles else ())
        groups, skipped = ref_groups + groups, ref_skipped + skipped
    return groups, skipped


def cmd_bench(opts: typed.BenchOptions, tp) -> int:
    """With --json, everything but the points goes to stderr; they follow on stdout, one JSON line each."""
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr if opts.json else stdout):
        rc, rows = _bench(opts, tp)
    if opts.json:
        for p in rows:
            stdout.write(json.dumps(p, sort_keys=True) + "\n")
        stdout.flush()
    return rc


def _bench(opts: typed.BenchOptions, tp) -> tuple[int, list[dict]]:
    started = time.monotonic()
    out = opts.out
    with tp.quiet():  # the fine-tuning dataset's check imports torch and datasets
        preflight.check_bench(opts)
        from vitcore.cli import gating  # noqa: F401 - torch and colossalai: see the top

        # heavy behind it (torch, colossalai or matplotlib): only once the arguments are valid
        from vitcore.measure import bench

        # heavy behind it (torch, colossalai or matplotlib): only once the arguments are valid
        from vitcore.processes import launch

        device = launch.resolve_device(opts.device)
        model = opts.model or typed.default_model(opts.device)
    groups, skipped = _plan_bench(opts, device, model)
    preflight.check_plan(groups, skipped)
    planned = {bench.group_key([c])[0] for g in groups for c in g}
    baseline = gating.load_baseline(opts.gate, planned=planned)
    if skipped:
        names = ", ".join(f"{s['plugin']} {s['precision'] or ''}".strip() for s in skipped)
        print(f"[vitcore] skipped {len(skipped)} entries that cannot run here (reasons in the report): {names}",
              file=sys.stderr)
    timing = opts.timing()
    reused = preflight.claim_out(out, resume=opts.resume, run=_run_record(opts, timing, model))
    tp.attach(output.log_path(out))
    before = {points.key(p) for p in results.read_points(os.path.join(out, "points.jsonl"))}
    measured = bench.run_matrix(groups, timing, out, resume=reused, progress=True, processes=opts.processes,
                                output=tp.worker_output(), stream=sys.stderr)
    if baseline is not None and opts.gate.until_decided:
        measured = gating.until_decided(opts.gate, out, groups, timing, measured, baseline)
    files.write_json(os.path.join(out, "skipped.json"), skipped)
    table = io.StringIO()
    _print_points(measured, file=table)
    tp.note(table.getvalue())
    if opts.verbose:
        _print_points(measured, file=sys.stderr)
    if opts.update_budgets:  # this run's planned points: measured now, or resumed and missing from the
        # budget file or newer than their entry (an interrupted recording); else they keep their entries
        refused = gating.update_budgets(opts.update_budgets, [p for p in measured if points.key(p) in planned and (
            points.key(p) not in before or not gating.has_budget(opts.update_budgets, p))],
            allow_invariant_change=opts.allow_invariant_change)
    else:
        refused = 0
    history = _finetune(opts, device, model, tp) if opts.finetune else None
    rc = gating.report_and_gate(opts.gate, opts.budgets, out, measured, skipped, history, baseline)
    failed = [p for p in measured if p.get("status") not in ("ok", "oom")]
    for p in failed:  # an OOM is a result; an error is not
        print(f"vitcore: error: {points.key_text(p)}: {(p.get('error') or p['status']).splitlines()[-1][:300]}",
              file=sys.stderr)
    rows = analysis.enrich(measured)
    if baseline is None:  # the report's summary; with --compare the gate's lines above say it
        verdicts = gating.budget_verdicts(opts.budgets, rows)[0]
        print(progress.report_line(analysis.summary(rows, verdicts, points.key)), file=sys.stderr)
    reused_n = sum(points.key(p) in before for p in measured)
    print(progress.summary(measured, reused_n, time.monotonic() - started, out), file=sys.stderr)
    return rc or (1 if failed or refused else 0), rows


def _run_record(opts: typed.BenchOptions, timing, model: str) -> dict:
    """What OUT/run.json records, and what --resume compares: the code and the settings that change
    how a point is measured (Timing's own fields as they are; its trace folder as whether to trace)."""
    settings = {k: v for k, v in dataclasses.asdict(timing).items() if k not in ("device_steps", "trace_dir")}
    settings |= {"profile": ",".join(opts.profiles), "model": model, "processes": opts.processes,
                 "trace": timing.trace_dir is not None}
    return {"code": results.code_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": settings}


def _finetune(opts: typed.BenchOptions, device, model, tp):
    """The study's fine-tuning (gemini on a GPU), at the model preset's recipe."""
    from vitcore.processes import launch  # torch and colossalai: see the note at the top

    # heavy behind it (torch, colossalai or matplotlib): only once the arguments are valid
    from vitcore.training import train

    gpu = device == "cuda"
    plugin = "gemini" if gpu else "torch_ddp"  # gemini needs CUDA; the study fine-tuned with it
    if not gpu:
        print("[vitcore] fine-tuning with torch_ddp: gemini needs a CUDA GPU", file=sys.stderr)
    recipe = get_preset(model).recipe
    # On a CPU: 1,500 images of the tiny preset, about 20 s.
    cfg = RunConfig(plugin=plugin, profile=opts.profiles[0], model=model, dataset=opts.dataset or "auto",
                    subset=None if gpu else 1500, epochs=opts.finetune_epochs or recipe.epochs, device=device,
                    batch_size=recipe.batch_size)
    hist = launch.run(train.finetune, cfg, None, False, device=device, timeout_s=cfg.timeout_s,
                      output=tp.worker_output(console_lines=True))[0]
    files.write_json(os.path.join(opts.out, "finetune.json"), hist)
    return hist


def cmd_report(opts: typed.ReportOptions, tp) -> int:
    """Its log: OUT/report.log, only where something went there (matplotlib's notices)."""
    preflight.check_report(opts)
    with tp.quiet():
        # heavy behind it (torch, colossalai or matplotlib): only once the arguments are valid
        from vitcore.cli import gating
        from vitcore.reporting import charts, report

        charts.available()  # matplotlib (charts imports it only to draw): its notices to the log
    rows = analysis.perf_points([p for f in opts.results for p in results.load(f, skip_bad=opts.skip_bad)])
    skipped = []
    for f in opts.results:
        side = os.path.join(os.path.dirname(f), "skipped.json")
        if os.path.exists(side):
            skipped += json.loads(Path(side).read_text())
    history = [json.loads(Path(h).read_text()) for h in opts.history]  # one or several (drawn side by side)
    baseline = gating.load_baseline(opts.gate, planned={points.key(p) for p in rows},
                                    device=points.device_key(rows[0]) if rows else None)
    tp.attach(Path(opts.out) / "report.log")
    if opts.markdown:
        print(report.summary_markdown(rows))
    return gating.report_and_gate(opts.gate, opts.budgets, opts.out, rows, skipped, history, baseline)


def cmd_ab(opts: typed.AbOptions, tp) -> int:
    from vitcore.cli import ab  # git and subprocesses; torch only once they have run

    return ab.run(opts)


def cmd_plugins(opts: typed.PluginsOptions, tp) -> int:
    """The registry as a table; 'here': the precisions that run on this machine at the entry's minimum
    world size, and why the others do not (plugins.unrunnable_reason)."""
    with tp.quiet():
        from vitcore.processes import launch  # torch: whether a GPU is here

        device = launch.resolve_device(opts.device)
    rows = [("name", "family", "precisions", "min GPUs", "compiles", f"runs here ({device})")]
    for spec in plugins.REGISTRY.values():
        why = {p: plugins.unrunnable_reason(spec, p, spec.min_world_size, device) for p in spec.precisions}
        runs = [p for p, reason in why.items() if reason is None]
        notes = sorted({reason for reason in why.values() if reason})
        here = ("yes: " + "/".join(runs) if runs else "no") + ("; " + "; ".join(
            f"{'/'.join(p for p, r in why.items() if r == n)} {n}" for n in notes) if notes else "")
        compiles = f"{spec.compile.where} boosting" + (", fast profile" if spec.compile.fast else "")
        rows.append((spec.name, spec.family, "/".join(spec.precisions), str(spec.min_world_size), compiles, here))
    _print_table(rows)
    return 0


def cmd_env(opts: typed.EnvOptions, tp) -> int:
    """The device identity budgets and baselines are keyed by, and the budget file that applies."""
    from vitcore.gate import budget_files  # light: no torch

    with tp.quiet():  # torch, colossalai and transformers, for their versions
        env = environment()
    path = budget_files.budget_path(opts.budgets, env)
    state = "exists" if path.is_file() else "missing: no budgets for this device; bench --update-budgets records them"
    rows = [("device", env["device"]), ("device identity", points.device_key(env)),
            ("torch", env["torch"]), ("cuda", env["cuda"] or "none (CPU build)"),
            ("colossalai", env["colossalai"] or "not installed"),
            ("transformers", env["transformers"] or "not installed"), ("python", env["python"]),
            ("vitcore", options.version_text().removeprefix("vitcore ")),
            ("budget file", f"{path} ({state})")]
    _print_table(rows, header=False)
    return 0


def cmd_pretrain(opts: typed.PretrainOptions, tp) -> int:
    """The stand-in pretrained checkpoint (vitcore.training.pretrain) written to --out."""
    with tp.quiet():
        model = opts.model or typed.default_model(opts.device)
        # torch and transformers (5 s): only for this command
        from vitcore.processes.launch import resolve_device
        from vitcore.training import pretrain
    prov = pretrain.pretrain(opts.out, model=model, device=resolve_device(opts.device), epochs=opts.epochs)
    print(f"vitcore: {prov['name']} in {prov['folder']} ({prov['steps']} steps, {prov['seconds']:.0f} s, held-out "
          f"accuracy {prov['pretrain_accuracy']:.3f} on its 7 classes); fine-tune from it with --weights {prov['folder']}")
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
