"""The command line's options: one parser per subcommand, options in groups, defaults shown, an
example epilog each. The commands themselves are vitcore.cli's; this module stays light (no torch)."""

from __future__ import annotations

import argparse
import textwrap

from vitcore import __version__
from vitcore.cli import preflight
from vitcore.gate import budgets
from vitcore.spec.config import ABLATE

DEFAULT_BUDGETS = "fixtures/budgets"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's example lines as written and appends each option's default to its help
    (lists as they are typed: 8,32,64,128), except where there is none or the help states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default in (None, False, [], argparse.SUPPRESS) or "default" in text or action.option_strings == []
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class VersionAction(argparse.Action):
    """`vitcore --version`: the package version and, where known, the git commit (computed only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())  # stdout, as `--help` (argparse's exit message goes to stderr)
        parser.exit(0)


def version_text() -> str:
    from vitcore.spec.env import git_sha  # a subprocess: only when asked

    sha = git_sha()
    return f"vitcore {__version__}" + (f" (git {sha})" if sha and sha != "unknown" else "")


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {x}" for x in lines)


def build_parser() -> argparse.ArgumentParser:
    ap = preflight.ArgumentParser(prog="vitcore", formatter_class=HelpFormatter,
                                  description="A benchmark and correctness suite for Colossal-AI Booster plugins "
                                              "fine-tuning a HF ViT on dog_food.",
                                  epilog=_examples("vitcore plugins", "vitcore env",
                                                   "vitcore bench --out reports/latest --finetune",
                                                   "vitcore train --plugin torch_ddp --epochs 1"))
    ap.add_argument("--version", action=VersionAction, help="print the version (and git commit) and exit")
    ap.set_defaults(verbose=False)  # the commands without --verbose (plugins, env, ab) print no third-party output
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help, description, epilog):
        return sub.add_parser(name, help=help, description=textwrap.fill(description, 100), epilog=epilog,
                              formatter_class=HelpFormatter)

    train_parser(add("train", "fine-tune ViT on dog_food with one plugin",
                     "Fine-tune the ViT preset on dog_food with one Booster plugin and print loss and accuracy "
                     "per epoch; the history (with the dataset and weights it used) goes to --out.",
                     _examples("vitcore train --plugin torch_ddp --model vit-tiny --epochs 1 --device cpu",
                               "vitcore train --plugin gemini --epochs 10 --out finetune.json",
                               "vitcore train --plugin hybrid_parallel --tp-size 2 --nproc 2")))
    bench_parser(add("bench", "throughput and peak memory over plugins x batch sizes",
                     "Time training steps (on random tensors) for every selected plugin x precision x batch size, "
                     "one process group per plugin entry; one line per finished point, then the report in --out.",
                     _examples("vitcore bench --out reports/latest",
                               "vitcore bench --plugins torch_ddp,gemini --batch-sizes 32,128 --out reports/x",
                               "vitcore bench --out reports/latest --resume   # same code and settings only",
                               "vitcore bench --json --out /tmp/b > points.jsonl",
                               "vitcore bench --finetune --dataset embedded --out reports/latest")))
    report_parser(add("report", "rebuild the HTML/JSON/CSV report from saved results",
                      "Render report.html, points.json, points.csv and summary.md from saved result files, with "
                      "each point's budget verdict; --baseline gates them.",
                      _examples("vitcore report reports/latest/points.jsonl --out /tmp/r",
                                "vitcore report r/points.jsonl --history pre.json --history random.json --out /tmp/r",
                                "vitcore report new/points.jsonl --baseline old/points.jsonl --out /tmp/r")))
    plugins_parser(add("plugins", "list the plugin registry and whether each entry runs here",
                       "The plugin registry (vitcore/spec/plugins.py) as a table: family, precisions, minimum GPUs, and "
                       "whether each precision runs on this machine, or why not.",
                       _examples("vitcore plugins", "vitcore plugins --device cpu")))
    ab_parser(add("ab", "wall time decided: a base revision against this checkout, interleaved on one GPU",
                  "Measure a base revision (a git worktree) and this working tree in fresh processes interleaved "
                  "A B B A ... on the same device in one run, and judge the working tree against the base by the "
                  "gate's rule: wall time by per-process medians at 99% (5 processes a side decide), device time, "
                  "launches and allocated memory by their thresholds. Exit 1 on a regression.",
                  _examples("vitcore ab --base origin/main --plugins gemini --batch-sizes 128 --out /tmp/ab",
                            "vitcore ab --base HEAD~1 --plugins low_level_zero_s1 --processes 7 --out /tmp/ab")))
    pretrain_parser(add("pretrain", "make the stand-in pretrained checkpoint (docs/data.md)",
                        "Pre-train the ViT preset on Fashion-MNIST's 7 classes other than the fine-tuned pullover / "
                        "coat / shirt, a stand-in for the in21k weights named so in every result, and save it with "
                        "save_pretrained and its provenance; load it with --weights FOLDER.",
                        _examples("vitcore pretrain --out /tmp/vitcore-standin-fmnist7-vit-tiny --device cpu")))
    env_parser(add("env", "show the device identity, versions and the budget file that applies",
                   "The device identity budgets and baselines are keyed by, the versions that make it up, and "
                   "the budget file of this device in --budgets (and whether it exists).",
                   _examples("vitcore env", f"vitcore env --budgets {DEFAULT_BUDGETS}")))
    return ap


# An option several commands take is added once, here (tests/test_layout.py): one type and one dest
# (the typed options' field) everywhere; a command gives its own default and help where they differ.
def _device(g, help="auto | cuda | cpu") -> None:
    g.add_argument("--device", default="auto", help=help)


def _model(g) -> None:
    g.add_argument("--model", default=None, help="model preset: vit-base | vit-tiny (default: vit-base on a GPU, "
                                                 "vit-tiny on a CPU)")


def _plugins(g, help, **kw) -> None:
    g.add_argument("--plugins", type=names, help=help, **kw)


def _batch_sizes(g, default) -> None:
    g.add_argument("--batch-sizes", type=ints, default=default, help="per data-parallel rank")


def _profile(g, help) -> None:
    g.add_argument("--profile", default="fast", help=help)


def _nproc(g, *, many: bool) -> None:
    """train runs one world size, bench several (a scaling study)."""
    g.add_argument("--nproc", type=ints if many else int, default=[1] if many else 1,
                   help="processes (GPUs) per run; several, comma-separated, for a scaling study (e.g. 1,2,4,8)"
                   if many else "processes (GPUs) in the run")


def _dataset(g, default, help) -> None:
    g.add_argument("--dataset", default=default, help=help)


def _timing(g, *, steps: int, repeats: int, min_window: float, min_window_help: str) -> None:
    """--warmup, --steps, --repeats, --min-window: how a point's windows are timed (measure.timing.Timing)."""
    g.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    g.add_argument("--steps", type=int, default=steps, help="steps per timed window")
    g.add_argument("--repeats", type=int, default=repeats, help="timed windows per process")
    g.add_argument("--min-window", type=float, default=min_window, help=min_window_help)


def _processes(g, default, help) -> None:
    g.add_argument("--processes", type=int, default=default, help=help)


def _timeout(g, default, help) -> None:
    g.add_argument("--timeout", type=float, default=default, help=help)


def _epochs(g, default, help) -> None:
    g.add_argument("--epochs", type=int, default=default, help=help)


def _out(g, help, **kw) -> None:
    g.add_argument("--out", help=help, **kw)


def _verbose(g, help) -> None:
    g.add_argument("--verbose", action="store_true", help=help)


def _budgets(g, help="budget folder whose verdicts the report shows per point") -> None:
    g.add_argument("--budgets", metavar="FOLDER", default=DEFAULT_BUDGETS, help=help)


def _fail_on(g, help) -> None:
    g.add_argument("--fail-on", default=None, help=help)


def _inject_device(g, help) -> None:
    g.add_argument("--inject-device-pct", type=float, default=0.0, help=help)


def _inject_host(g, help) -> None:
    g.add_argument("--inject-host-pct", type=float, default=0.0, help=help)


def train_parser(t: argparse.ArgumentParser) -> None:
    w = t.add_argument_group("what to train")
    w.add_argument("--plugin", default="torch_ddp", help="registry entry; `vitcore plugins` lists them")
    w.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: the profile's for the plugin)")
    _profile(w, "fast | study (the original study's settings)")
    _model(w)
    _device(w)
    w.add_argument("--attention", default=None, help="eager | sdpa (default: the profile's)")
    p = t.add_argument_group("parallelism")
    _nproc(p, many=False)
    p.add_argument("--tp-size", type=int, default=None, help="tensor-parallel size (hybrid_parallel)")
    p.add_argument("--pp-size", type=int, default=None, help="pipeline-parallel size (hybrid_parallel)")
    d = t.add_argument_group("data and weights")
    _dataset(d, "auto", "auto | embedded | lewtun/dog_food | PATH (an image folder)")
    d.add_argument("--weights", default="auto", help="auto | random | PATH or hub id in the HF cache")
    d.add_argument("--subset", type=int, default=None, help="train on this many images (default: all)")
    s = t.add_argument_group("schedule")
    s.add_argument("--batch-size", type=int, default=32, help="per data-parallel rank")
    _epochs(s, 3, "passes over the train split")
    s.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut each epoch short (default: no limit)")
    s.add_argument("--lr", type=float, default=None,
                   help="default: the model preset's recipe (3e-4 vit-base, 2e-3 vit-tiny)")
    s.add_argument("--seed", type=int, default=42, help="data order and initialisation")
    _timeout(s, 3600.0, "seconds before a multi-process run is ended")
    o = t.add_argument_group("output")
    o.add_argument("--checkpoint-dir", default=None, help="save and reload a checkpoint through the Booster here")
    _out(o, "write the history JSON here", default=None)
    _verbose(o, "also show third-party output on the console (it always goes to the run's log)")


def bench_parser(b: argparse.ArgumentParser) -> None:
    w = b.add_argument_group("what to measure")
    _plugins(w, "names or families, comma-separated (default: all)", default=None)
    w.add_argument("--precisions", type=names, default=None, help="default: the profile's choice per plugin")
    _batch_sizes(w, [8, 32, 64, 128])
    _profile(w, "fast | study (the original study's settings); several, comma-separated")
    _model(w)
    _device(w)
    _nproc(w, many=True)
    w.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the plain-PyTorch reference (bf16 autocast, SDPA, fused AdamW, +torch.compile)")
    w.add_argument("--ablate", nargs="?", const="all", default=None, choices=ABLATE, metavar="WHICH",
                   help="also measure the profile with each option flipped, one at a time: profile (attention, "
                        "grad_checkpoint, compile, fused_optimizer, plugin_kernels, freeze_gc, precision), plugin "
                        "(the entry's own options, e.g. overlap_communication=False) or all (the default without WHICH): "
                        "docs/performance.md")
    w.add_argument("--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
                   help="set a profile option or a plugin's own option for every point, e.g. freeze_gc=true, "
                        "attention=eager or max_prefetch=2 (repeatable; the points are labelled with it, as ablation "
                        "variants are; entries without that option are skipped)")
    h = b.add_argument_group("how each point is timed")
    _timing(h, steps=20, repeats=5, min_window=1.0,
            min_window_help="seconds each timed window lasts at least (more steps when steps are fast); 0: exactly --steps")
    _processes(h, None, "measure every group this many times in separate processes and pool their windows "
                        "(the wall rule compares process medians and decides only with 5 a side: docs/gate.md); "
                        "default 1, or 3 with --update-budgets (a budget is the band fresh processes span)")
    h.add_argument("--trace", action="store_true",
                   help="also profile 5 steps per point: OUT/traces/trace-*.txt (top operators), gpu_busy and the host "
                        "time per step by package and upstream function (docs/performance.md)")
    _timeout(h, 1800.0, "seconds a process group may take")
    f = b.add_argument_group("fine-tuning (loss and accuracy curves in the report)")
    f.add_argument("--finetune", action="store_true",
                   help="also fine-tune (gemini on a GPU, as the study; torch_ddp on a CPU) and chart loss/accuracy")
    f.add_argument("--finetune-epochs", type=int, default=None, help="default: the preset's recipe (10, as the study)")
    _dataset(f, None, "the fine-tuning's data: auto | embedded | lewtun/dog_food | PATH; needs --finetune "
                      "(default: auto)")
    o = b.add_argument_group("output")
    _out(o, "folder of points.jsonl, the report and bench.log", default="reports/latest")
    o.add_argument("--resume", action="store_true",
                   help="reuse the finished points in --out when OUT/run.json names the same git commit and settings "
                        "(else start fresh, saying why); an OOM is kept, error and timeout points are measured again")
    o.add_argument("--json", action="store_true",
                   help="print the points to stdout as JSON lines (the schema's fields); everything else to stderr")
    _verbose(o, "also show third-party output (warnings, other packages' logging, workers' output) on the console; "
                "it always goes to OUT/bench.log")
    _budgets(o)
    o.add_argument("--update-budgets", metavar="FOLDER", default=None,
                   help="record each measured point as this device's budget in FOLDER (gated values, the window "
                        "samples and provenance; see docs/gate.md)")
    o.add_argument("--allow-invariant-change", action="store_true",
                   help="with --update-budgets: record launches or steady memory that differ from another device's "
                        "entry of the same architecture (a deliberate code change); else that entry is refused")
    gate_options(b, "--compare")
    t = b.add_argument_group("test only: injected regressions (docs/gate.md; such points are never budgets)")
    _inject_device(t, "after every step, a GPU spin of this percentage of the step's device time")
    _inject_host(t, "after every step, a host sleep of this percentage of the step's wall time")


def gate_options(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("the gate (docs/gate.md)")
    g.add_argument(name, dest="baseline", metavar="BASELINE", default=None,  # one option, two commands' names
                   help="baseline results (points.jsonl / points.json) of this device to gate against; a missing or "
                        "unreadable file, another device, or a baseline point this run lacks is an error")
    _fail_on(g, "override tolerances, e.g. device_time:2%%,memory:3%% (groups: "
             + ", ".join(f"{k}:{v:.0%}" for k, v in budgets.tolerances().items()).replace("%", "%%") + " by default)")
    g.add_argument("--allow-missing", action="store_true", help="accept baseline points this run does not measure")
    g.add_argument("--strict", action="store_true",
                   help="also fail on improvements beyond the tolerance (the baseline is out of date)")
    if name == "--compare":
        g.add_argument("--until-decided", type=int, default=0, metavar="N",
                       help="re-measure points whose throughput verdict is inconclusive in up to N more processes, "
                            "pooling their windows")


def report_parser(r: argparse.ArgumentParser) -> None:
    r.add_argument("results", nargs="+", help="points.jsonl / points.json / gpu-results.json files")
    o = r.add_argument_group("output")
    _out(o, "folder for report.html, points.json, points.csv, summary.md", required=True)
    _budgets(o)
    o.add_argument("--skip-bad", action="store_true",
                   help="leave out lines of a results file that are not points, each named on stderr "
                        "(default: such a line is an error)")
    o.add_argument("--history", action="append", default=None,
                   help="a fine-tuning history JSON (vitcore train --out); repeat it to draw several runs on the "
                        "same axes, e.g. --history pretrained.json --history random.json")
    o.add_argument("--markdown", action="store_true", help="also print the Markdown tables")
    _verbose(o, "also show third-party output on the console (it always goes to OUT/report.log)")
    gate_options(r, "--baseline")


def plugins_parser(p: argparse.ArgumentParser) -> None:
    _device(p, "the device 'runs here' is judged for: auto | cuda | cpu")


def ab_parser(a: argparse.ArgumentParser) -> None:
    w = a.add_argument_group("what to compare")
    base = w.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", metavar="REV", help="the base revision (sha, branch, HEAD~1), checked out in a "
                                                    "temporary git worktree under --out")
    base.add_argument("--base-tree", metavar="DIR", help="the base revision's code already checked out in DIR "
                                                         "(a host without the suite's .git)")
    w.add_argument("--head-tree", metavar="DIR", default=None,
                   help="the code under test (default: this checkout, uncommitted changes included)")
    _plugins(w, "names or families, comma-separated", required=True)
    _batch_sizes(w, [128])
    _model(w)
    _device(w)
    h = a.add_argument_group("how each process is timed")
    _processes(h, 5, "fresh processes a side (5 decide at 99%%)")
    _timing(h, steps=10, repeats=3, min_window=0.3, min_window_help="seconds each timed window lasts at least")
    _timeout(h, 900.0, "seconds one bench process may take")
    o = a.add_argument_group("output and the rule")
    _out(o, "an empty or new folder: base.jsonl, head.jsonl, ab.json, ab.log", required=True)
    _fail_on(o, "override tolerances, as for bench --compare")
    t = a.add_argument_group("test only: a change injected into the head side (docs/gate.md)")
    _inject_host(t, "a host sleep of this %% of each head step")
    _inject_device(t, "a GPU spin of this %% of each head step")


def env_parser(e: argparse.ArgumentParser) -> None:
    _budgets(e, "budget folder to look in")


def pretrain_parser(p: argparse.ArgumentParser) -> None:
    _out(p, "the checkpoint folder (new or empty)", required=True, metavar="FOLDER")
    _model(p)
    _device(p)
    _epochs(p, None, "pretraining epochs (default: the preset's recipe)")
