"""The command line's options typed once (issue 28): each command's options are one frozen object
built by its `from_args`, the one place that reads the argparse namespace, and validated there;
every other function of vitcore/cli takes the typed object; each long option is added once across
vitcore/cli (a shared option by one helper), and every option a parser adds is a field that is read."""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
from pathlib import Path

import pytest

from vitcore import ConfigError
from vitcore.cli import options, typed
from vitcore.gate import budgets

CLI = Path(__file__).resolve().parent.parent / "vitcore" / "cli"
NAMESPACE = {"args", "ns", "namespace"}  # what the namespace is called where it is read
READERS = {"from_args", "_from", "main"}  # the typed options' constructors, their helper, the dispatch


def namespace_readers(root: Path) -> list[str]:
    """Functions of `root` other than READERS that use a name for the namespace (argparse's own
    Action protocol hands one to VersionAction, which leaves it unused), call vars(), or keep a
    `parse_args(...)` result instead of handing it straight to a `from_args`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        handed = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and n.func.attr == "from_args" for a in n.args}
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in READERS:
                continue
            for n in ast.walk(fn):
                used = isinstance(n, ast.Name) and (n.id in NAMESPACE or n.id == "vars") and isinstance(n.ctx, ast.Load)
                kept = (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "parse_args"
                        and id(n) not in handed)
                if used or kept:
                    out.append(f"{path.name}:{n.lineno} {fn.name}")
    return sorted(set(out))


def options_added(root: Path) -> dict[str, list[str]]:
    """Each long option string passed to an add_argument call, with where."""
    where = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument":
                for a in n.args:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--"):
                        where[a.value].append(f"{path.name}:{n.lineno}")
    return dict(where)


def test_only_the_typed_options_read_the_namespace():
    assert namespace_readers(CLI) == [], "take the command's typed options (vitcore/cli/typed.py) instead"


def test_each_long_option_is_added_once_across_the_command_line():
    added = options_added(CLI)
    assert "--out" in added and "--fail-on" in added  # the check sees the parsers
    assert {k: v for k, v in added.items() if len(v) > 1} == {}, "add a shared option by one helper in cli/options.py"


def test_the_checks_see_a_namespace_read_and_an_option_added_twice(tmp_path):
    """Injected: a gate function reading args, a kept parse_args result, two --out."""
    (tmp_path / "gating.py").write_text(
        "def load_baseline(args):\n    return args.baseline\n\n"
        "def check(opts, p):\n    bench = p.parse_args([])\n    ok = X.from_args(p.parse_args([]))\n    return bench, ok\n\n"
        "class V:\n    def __call__(self, parser, namespace, values, option_string=None):\n        pass\n\n"
        "class X:\n    @classmethod\n    def from_args(cls, args):\n        return cls(**vars(args))\n")
    (tmp_path / "options.py").write_text(
        "def a(g):\n    g.add_argument('--out', help='x')\n\ndef b(g):\n    g.add_argument('-o', '--out')\n")
    assert namespace_readers(tmp_path) == ["gating.py:2 load_baseline", "gating.py:5 check"]
    assert options_added(tmp_path) == {"--out": ["options.py:2", "options.py:5"]}


MINIMAL = {"train": ["--device", "cpu"], "bench": ["--device", "cpu"], "report": ["r.jsonl", "--out", "o"],
           "plugins": [], "env": [], "ab": ["--base", "HEAD", "--plugins", "torch_ddp", "--out", "o"],
           "pretrain": ["--out", "o", "--device", "cpu"]}


class Recording(argparse.Namespace):
    """A namespace that adds to `read` each of its entries read (an attribute, or through vars())."""

    def __init__(self, ns, read: set):
        super().__init__()
        self.__dict__ = RecordingDict(vars(ns), read)

    def __getattribute__(self, name):
        values = object.__getattribute__(self, "__dict__")
        if name in values:
            values.read.add(name)
        return object.__getattribute__(self, name)


class RecordingDict(dict):
    def __init__(self, values, read):
        super().__init__(values)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = options.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("cmd", sorted(MINIMAL))
def test_every_option_of_a_command_is_read_by_its_typed_options(cmd):
    """An option is one add_argument and one field: a parser's option that no field reads fails here,
    a field without an option fails in `_from` (KeyError)."""
    parser = subparsers()[cmd]
    assert set(typed.OPTIONS) == set(MINIMAL)
    read = set()
    opts = typed.OPTIONS[cmd].from_args(Recording(options.build_parser().parse_args([cmd, *MINIMAL[cmd]]), read))
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests - read <= {"verbose"}, "an option no typed field reads (--verbose is main's, for the console)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.out = "x"  # noqa: B010 - frozen: read once, never rewritten
    assert dataclasses.replace(opts) == opts


def bench(*argv) -> typed.BenchOptions:
    return typed.BenchOptions.from_args(options.build_parser().parse_args(["bench", "--device", "cpu", *argv]))


def test_bench_options_parse_and_resolve_once():
    opts = bench("--profile", "fast,study", "--option", "freeze_gc=true", "--fail-on", "throughput:7%",
                 "--compare", "b.jsonl", "--until-decided", "2", "--trace", "--out", "o")
    assert opts.profiles == ("fast", "study") and opts.set_options == {"freeze_gc": True}
    assert opts.processes == 1 and opts.gate.baseline == "b.jsonl" and opts.gate.until_decided == 2
    assert opts.gate.tolerances == budgets.fail_on_tolerances("throughput:7%")
    timing = opts.timing()
    assert (timing.steps, timing.repeats, timing.warmup, timing.min_window_s, timing.trace_dir) == (20, 5, 5, 1.0,
                                                                                                   "o/traces")


def test_the_run_record_holds_timings_fields_as_timing_has_them():
    from vitcore.cli import commands

    opts = bench("--steps", "7", "--min-window", "0.5", "--inject-host-pct", "3")
    settings = commands._run_record(opts, opts.timing(), "vit-tiny")["settings"]
    assert settings == {"warmup": 5, "steps": 7, "repeats": 5, "min_window_s": 0.5, "inject_device_pct": 0.0,
                        "inject_host_pct": 3.0, "profile": "fast", "model": "vit-tiny", "processes": 1,
                        "trace": False}


@pytest.mark.parametrize("argv,message", [
    (["--profile", "fast,"], "--profile: unknown value ''; valid: study, fast"),
    (["--fail-on", "speed:3%"], "bad --fail-on item 'speed:3%'"),
    (["--until-decided", "2"], "--until-decided 2 needs --compare BASELINE"),
    (["--option", "nope=1"], "--option 'nope=1': expected NAME=VALUE"),
    (["--dataset", "embedded"], "--dataset 'embedded' is the fine-tuning's data and needs --finetune"),
])
def test_a_bad_bench_value_is_one_line_on_construction(argv, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace("'", "'")):
        bench(*argv)
