"""`vitcore train | bench | report`. Bad input ends in one line naming the value and the choices."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vitcore import VitcoreError, analysis, budgets, gating, plugins, points, preflight, report, results
from vitcore.config import OPTIONS, RunConfig
from vitcore.env import environment
from vitcore.model import ATTENTION, get_preset

# Commands that measure import torch (2.4 s measured here) and colossalai (8.1 s) inside their
# function (launch, bench, reference, timing, train), so that `--help`, bad-input errors and
# `vitcore report` answer at once.


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model preset: vit-base | vit-tiny")
    p.add_argument("--profile", default="fast", help="fast | study (the original study's settings); "
                                                     "bench takes several, comma-separated")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")


def build_parser() -> argparse.ArgumentParser:
    ap = preflight.ArgumentParser(prog="vitcore", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _train_parser(sub.add_parser("train", help="fine-tune ViT on dog_food with one plugin"))
    _bench_parser(sub.add_parser("bench", help="throughput and peak memory over plugins x batch sizes"))
    _report_parser(sub.add_parser("report", help="rebuild the HTML/JSON/CSV report from saved results"))
    return ap


def _train_parser(t: argparse.ArgumentParser) -> None:
    _common(t)
    t.add_argument("--nproc", type=int, default=1, help="processes (GPUs) in the run")
    t.add_argument("--plugin", default="torch_ddp")
    t.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: the profile's)")
    t.add_argument("--dataset", default="auto", help="auto | embedded | lewtun/dog_food | PATH")
    t.add_argument("--weights", default="auto", help="auto | random | PATH or hub id in the HF cache")
    t.add_argument("--subset", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=32, help="per data-parallel rank")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--max-steps-per-epoch", type=int, default=None)
    t.add_argument("--lr", type=float, default=None,
                   help="default: the model preset's recipe (3e-4 vit-base, 2e-3 vit-tiny)")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--attention", default=None, help="eager | sdpa")
    t.add_argument("--tp-size", type=int, default=None)
    t.add_argument("--pp-size", type=int, default=None)
    t.add_argument("--checkpoint-dir", default=None)
    t.add_argument("--out", default=None, help="write the history JSON here")
    t.add_argument("--timeout", type=float, default=3600.0)


def _bench_parser(b: argparse.ArgumentParser) -> None:
    _common(b)
    b.add_argument("--nproc", type=_ints, default=[1],
                   help="processes (GPUs) per run; several, comma-separated, for a scaling study (e.g. 1,2,4,8)")
    b.add_argument("--plugins", type=_names, default=None, help="names or families, comma-separated (default: all)")
    b.add_argument("--batch-sizes", type=_ints, default=[8, 32, 64, 128])
    b.add_argument("--precisions", type=_names, default=None, help="default: the profile's choice per plugin")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--min-window", type=float, default=1.0,
                   help="seconds each timed window lasts at least (more steps when steps are fast); 0: exactly --steps")
    b.add_argument("--out", default="reports/latest")
    b.add_argument("--trace", action="store_true",
                   help="also profile 5 steps per point: OUT/traces/trace-*.txt (top operators) and gpu_busy per point")
    b.add_argument("--resume", action="store_true",
                   help="keep finished points in --out and measure the rest; an OOM is a recorded result and "
                        "is kept, error and timeout points are measured again (the run exits 1 if any point "
                        "ends in error)")
    b.add_argument("--timeout", type=float, default=1800.0)
    b.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the plain-PyTorch reference (bf16 autocast, SDPA, fused AdamW, +torch.compile)")
    b.add_argument("--finetune", action="store_true",
                   help="also fine-tune (gemini on a GPU, as the study; torch_ddp on a CPU) and chart loss/accuracy")
    b.add_argument("--finetune-epochs", type=int, default=None, help="default: the preset's recipe (10, as the study)")
    b.add_argument("--ablate", action="store_true",
                   help="also measure the profile with each option flipped, one at a time "
                        "(attention, grad_checkpoint, compile, fused_optimizer, plugin_kernels, "
                        "freeze_gc, precision): the table in docs/performance.md")
    b.add_argument("--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
                   help="set a profile option for every point, e.g. freeze_gc=true or attention=eager "
                        "(repeatable; the points are labelled with it, as ablation variants are)")
    b.add_argument("--processes", type=int, default=1,
                   help="measure every group this many times in separate processes and pool their windows "
                        "(the wall rule compares process medians and decides only with 5 a side: docs/gate.md)")
    b.add_argument("--update-budgets", metavar="FOLDER", default=None,
                   help="record each measured point as this device's budget in FOLDER (gated values, the window "
                        "samples and provenance; see docs/gate.md)")
    b.add_argument("--budgets", metavar="FOLDER", default="fixtures/budgets",
                   help="budget folder whose verdicts the report shows per point (default: fixtures/budgets)")
    _gate_options(b, "--compare")
    t = b.add_argument_group("test only: injected regressions (docs/gate.md; such points are never budgets)")
    t.add_argument("--inject-device-pct", type=float, default=0.0,
                   help="after every step, a GPU spin of this percentage of the step's device time")
    t.add_argument("--inject-host-pct", type=float, default=0.0,
                   help="after every step, a host sleep of this percentage of the step's wall time")


def _gate_options(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("the gate (docs/gate.md)")
    g.add_argument(name, metavar="BASELINE", default=None,
                   help="baseline results (points.jsonl / points.json) of this device to gate against; a missing or "
                        "unreadable file, another device, or a baseline point this run lacks is an error")
    g.add_argument("--fail-on", default=None,
                   help="override tolerances, e.g. device_time:2%%,memory:3%% (groups: "
                        + ", ".join(f"{k}:{v:.0%}" for k, v in budgets.tolerances().items()).replace("%", "%%")
                        + " by default)")
    g.add_argument("--allow-missing", action="store_true", help="accept baseline points this run does not measure")
    g.add_argument("--strict", action="store_true",
                   help="also fail on improvements beyond the tolerance (the baseline is out of date)")
    if name == "--compare":
        g.add_argument("--until-decided", type=int, default=0, metavar="N",
                       help="re-measure points whose throughput verdict is inconclusive in up to N more processes, "
                            "pooling their windows")


def _report_parser(r: argparse.ArgumentParser) -> None:
    r.add_argument("results", nargs="+", help="points.jsonl / points.json / gpu-results.json files")
    r.add_argument("--out", required=True)
    r.add_argument("--budgets", metavar="FOLDER", default="fixtures/budgets",
                   help="budget folder whose verdicts the report shows per point")
    _gate_options(r, "--baseline")
    r.add_argument("--skip-bad", action="store_true",
                   help="leave out lines of a results file that are not points, each named on stderr "
                        "(default: such a line is an error)")
    r.add_argument("--history", default=None, help="a fine-tuning history JSON (vitcore train --out)")
    r.add_argument("--markdown", action="store_true", help="also print the Markdown tables")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "bench": cmd_bench, "report": cmd_report}[args.cmd](args)
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


def _options(pairs: list[str]) -> dict:
    """--option NAME=VALUE pairs as RunConfig fields (true/false for the on/off options)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in OPTIONS:
            raise VitcoreError(f"--option {pair!r}: expected NAME=VALUE with NAME one of {', '.join(OPTIONS)}")
        if name == "attention":
            if value not in ATTENTION:
                raise VitcoreError(f"--option {pair!r}: unknown attention {value!r}; valid: {', '.join(ATTENTION)}")
        else:
            if value.lower() not in ("true", "false"):
                raise VitcoreError(f"--option {pair!r}: {name} takes true or false")
            value = value.lower() == "true"
        out[name] = value
    return out


def _plan_bench(args, profiles, device, model):
    from vitcore import bench, reference  # torch and colossalai: see the note at the top

    groups, skipped, seen = [], [], set()
    for prof in profiles:
        for nproc in args.nproc:
            g, s = bench.plan(args.plugins, args.batch_sizes, args.precisions, profile=prof, model=model,
                              world_size=nproc, device=device, ablate=args.ablate,
                              options=_options(args.options))
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
    preflight.check_bench(args)
    from vitcore import bench, launch  # torch and colossalai: see the note at the top
    from vitcore.timing import Timing

    profiles = _names(args.profile)
    device = launch.resolve_device(args.device)
    model = _default_model(args)
    groups, skipped = _plan_bench(args, profiles, device, model)
    preflight.check_plan(groups, skipped)
    planned = {bench.group_key([c])[0] for g in groups for c in g}
    baseline = gating.load_baseline(args, planned=planned)
    for s in skipped:
        print(f"[vitcore] skipped {s['plugin']} {s['precision'] or ''}: {s['reason']}", file=sys.stderr)
    timing = Timing(warmup=args.warmup, steps=args.steps, repeats=args.repeats, min_window_s=args.min_window,
                    trace_dir=os.path.join(args.out, "traces") if args.trace else None,
                    inject_device_pct=args.inject_device_pct, inject_host_pct=args.inject_host_pct)
    preflight.claim_out(args.out, resume=args.resume)
    before = {points.key(p) for p in results.read_points(os.path.join(args.out, "points.jsonl"))}
    measured = bench.run_matrix(groups, timing, args.out, resume=args.resume, progress=True, processes=args.processes)
    if baseline is not None and args.until_decided:
        measured = gating.until_decided(args, groups, timing, measured, baseline)
    results.write_json(os.path.join(args.out, "skipped.json"), skipped)
    _print_points(measured)
    print(f"[vitcore] {len(measured)} points in {os.path.join(args.out, 'points.jsonl')}")
    if args.update_budgets:  # this run's planned points: measured now, or resumed and missing from the
        # budget file (an interrupted recording); resumed points keep the budgets they had
        gating.update_budgets(args.update_budgets, [p for p in measured if points.key(p) in planned and (
            points.key(p) not in before or not gating.has_budget(args.update_budgets, p))])
    history = _finetune(args, device, model) if args.finetune else None
    rc = gating.report_and_gate(args, measured, skipped, history, baseline)
    failed = [p for p in measured if p.get("status") not in ("ok", "oom")]
    for p in failed:  # an OOM is a result; an error is not
        print(f"vitcore: error: {points.key_text(p)}: {(p.get('error') or p['status']).splitlines()[-1][:300]}",
              file=sys.stderr)
    return rc or (1 if failed else 0)


def _finetune(args, device, model):
    """The study's fine-tuning (gemini on a GPU), at the model preset's recipe."""
    from vitcore import launch, train  # torch and colossalai: see the note at the top

    gpu = device == "cuda"
    plugin = "gemini" if gpu else "torch_ddp"  # gemini needs CUDA; the study fine-tuned with it
    if not gpu:
        print("[vitcore] fine-tuning with torch_ddp: gemini needs a CUDA GPU", file=sys.stderr)
    recipe = get_preset(model).recipe
    # On a CPU: 1,500 images of the tiny preset, about 20 s.
    cfg = RunConfig(plugin=plugin, profile=_names(args.profile)[0], model=model, dataset="auto",
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


def _print_points(rows) -> None:
    """The schema's console columns (numbers right-aligned), then the status."""
    cols = points.console_fields()

    def cell(f, text):
        return f"{text:>{f.console}}" if f.numeric else f"{text:<{f.console}}"

    print("".join(cell(f, f.short) for f in cols) + "  status")
    for p in rows:
        print("".join(cell(f, f.format(p.get(f.name)) or "-") for f in cols) + f"  {p['status']}")

if __name__ == "__main__":
    sys.exit(main())
