"""Bad input on every path: exit code 2 and ONE stderr line `vitcore: error: ...` naming the value
(and the valid choices), before anything is trained or measured. docs/errors.md lists each case.

vitcore.cli.main is called in this process (a subprocess pays ~8 s of imports on a small CPU host),
except for FRESH (a fresh process, where import-time output of third-party packages would show, with
an unknown one injected: the error line alone, issue 26) and the pytest option, which pytest itself
must report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cli import error_line, run
from vitcore.gate import budgets
from vitcore.inputs import data
from vitcore.inputs.model import ATTENTION
from vitcore.spec.config import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--device", "cpu", "--model", "vit-tiny", "--dataset", "embedded"]
BENCH = ["bench", "--device", "cpu", "--model", "vit-tiny", "--no-reference", "--plugins", "torch_ddp",
         "--batch-sizes", "8", "--out", "{d}/out"]
REPORT = ["report", "{d}/ok.jsonl", "--out", "{d}/r"]


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """A folder of bad inputs, built once."""
    d = tmp_path_factory.mktemp("bad")
    point = (ROOT / "reports/h100/2026-11-24-0abb0f6/points.jsonl").read_text().splitlines()[0]
    (d / "ok.jsonl").write_text(point + "\n")
    (d / "foreign.jsonl").write_text(point + "\n42\n")
    (d / "torn.jsonl").write_text(point + '\n{"plugin": "torch_ddp", "batch_')
    (d / "bad.json").write_text('{"results": [\n')
    (d / "afile").write_text("x")
    (d / "history.json").write_text("{\n")
    for name, text in (("budgets_bad", '{"entries": {\n'), ("budgets_foreign", "[1, 2]")):
        (d / name).mkdir()
        (d / name / "dev.json").write_text(text)
    (d / "side").mkdir()
    (d / "side" / "points.jsonl").write_text(point + "\n")
    (d / "side" / "skipped.json").write_text("[{")
    (d / "done").mkdir()
    (d / "done" / "points.jsonl").write_text(point + "\n")
    _image_folder(d / "labels", ["cat"])
    cut = _image_folder(d / "trunc", data.LABELS) / "muffin" / "cut.jpg"
    data.embedded_image(2, "train", 0).resize((256, 256)).save(cut, "JPEG")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return d


def _image_folder(root: Path, labels) -> Path:
    for c, name in enumerate(labels):
        (root / name).mkdir(parents=True)
        for i in range(2):
            data.embedded_image(c % 3, "train", i).save(root / name / f"{i}.png")
    return root


CASES = [
    # vitcore train
    (TRAIN + ["--plugin", "nope"], "unknown plugin 'nope'; valid: torch_ddp, torch_ddp_fp16"),
    (TRAIN + ["--batch-size", "0"], "batch size 0 must be a positive integer"),
    (TRAIN + ["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
    (TRAIN + ["--epochs", "-1"], "epochs -1 must be an integer >= 0"),
    (TRAIN + ["--plugin", "hybrid_parallel", "--tp-size", "3", "--nproc", "3"],
     "tp size 3 does not divide vit-tiny's 4 attention heads"),
    (TRAIN + ["--model", "vit-huge"], "unknown model 'vit-huge'; valid: vit-base, vit-tiny"),
    (TRAIN + ["--device", "tpu"], "unknown device 'tpu'; valid: auto, cuda, cpu"),
    (TRAIN + ["--profile", "turbo"], "unknown profile 'turbo'; valid: study, fast"),
    (TRAIN + ["--precision", "fp8"], "unknown precision 'fp8'; valid: fp32, fp16, bf16"),
    (TRAIN + ["--attention", "flash"], "unknown attention 'flash'; valid: eager, sdpa"),
    (TRAIN + ["--lr", "-1"], "learning rate -1.0 must be >= 0"),
    (TRAIN + ["--subset", "0"], "subset 0 must be a positive integer"),
    (TRAIN + ["--subset", "3000"], "subset 3000 is out of range; valid: 1..2250"),
    (TRAIN + ["--max-steps-per-epoch", "0"], "max steps per epoch 0 must be >= 1"),
    (TRAIN + ["--plugin", "gemini"], "plugin 'gemini' with bf16 needs CUDA"),
    (TRAIN + ["--nproc", "0"], "--nproc 0 is out of range; valid: an integer >= 1"),
    (TRAIN + ["--nproc", "-2"], "--nproc -2 is out of range; valid: an integer >= 1"),
    (TRAIN + ["--subset", "30", "--batch-size", "32"],
     "the train split has 30 images, 30 per data-parallel rank (1 ranks): less than one batch of --batch-size 32"),
    (TRAIN + ["--timeout", "0"], "--timeout 0.0 must be > 0 seconds"),
    (TRAIN + ["--out", "{d}"], "--out '{d}' is a folder; give a file path"),
    (TRAIN + ["--checkpoint-dir", "{d}/afile"], "--checkpoint-dir '{d}/afile' is a file; give a folder"),
    (TRAIN + ["--weights", "/nonexistent"], "weights path '/nonexistent' does not exist; valid: auto"),
    (TRAIN + ["--weights", "nobody/no-such-vit"], "weights 'nobody/no-such-vit': no such folder, and not in the HF cache"),
    (TRAIN + ["--dataset", "/nonexistent/dog_food"], "dataset path '/nonexistent/dog_food' does not exist"),
    (TRAIN + ["--dataset", "{d}/labels"], "has 1 class folder(s) ['cat']; a classifier needs at least 2"),
    (TRAIN + ["--dataset", "{d}/trunc"], "corrupt image file '{d}/trunc/muffin/cut.jpg': image file is truncated"),
    (TRAIN + ["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["fly"], "argument cmd: invalid choice: 'fly' (choose from"),
    # vitcore bench
    (BENCH + ["--plugins", ","], "--plugins names no plugin; valid: names torch_ddp"),
    (BENCH + ["--plugins", "nope"], "unknown plugin 'nope'; valid names: torch_ddp"),
    (BENCH + ["--precisions", "fp8"], "--precisions: unknown value 'fp8'; valid: fp32, fp16, bf16"),
    (BENCH + ["--precisions", "fp16"], "nothing to measure: every selected plugin entry is skipped (torch_ddp fp16:"),
    (BENCH + ["--nproc", "0"], "--nproc 0: expected positive integers"),
    (BENCH + ["--profile", "fast,turbo"], "--profile: unknown value 'turbo'; valid: study, fast"),
    (BENCH + ["--model", "vit-huge"], "--model: unknown value 'vit-huge'; valid: vit-base, vit-tiny"),
    (BENCH + ["--device", "tpu"], "--device: unknown value 'tpu'; valid: auto, cuda, cpu"),
    (BENCH + ["--steps", "0"], "--steps 0 is out of range; valid: an integer >= 1"),
    (BENCH + ["--repeats", "0"], "--repeats 0 is out of range; valid: an integer >= 1"),
    (BENCH + ["--warmup", "-1"], "--warmup -1 is out of range; valid: an integer >= 0"),
    (BENCH + ["--min-window", "-1"], "--min-window -1.0 must be >= 0 seconds"),
    (BENCH + ["--timeout", "0"], "--timeout 0.0 must be > 0 seconds"),
    (BENCH + ["--finetune-epochs", "0"], "--finetune-epochs 0 is out of range; valid: an integer >= 1"),
    (BENCH + ["--out", "{d}/afile"], "--out '{d}/afile' is a file; give a folder"),
    (BENCH + ["--out", "{d}/afile/sub"], "--out '{d}/afile/sub' cannot be created: '{d}/afile' is a file"),
    (BENCH + ["--out", "{d}/done"], "{d}/done/points.jsonl exists; pass --resume"),
    (BENCH + ["--update-budgets", "{d}/budgets_bad"], "budget file {d}/budgets_bad/dev.json:2 is not valid JSON"),
    (BENCH + ["--update-budgets", "{d}/afile"], "--update-budgets '{d}/afile' is a file"),
    (BENCH + ["--update-budgets", "{d}/new", "--processes", "2"],
     "--processes 2 with --update-budgets: a budget needs at least 3 fresh processes"),
    (BENCH + ["--allow-invariant-change"], "--allow-invariant-change needs --update-budgets FOLDER"),
    (BENCH + ["--processes", "0"], "--processes 0 is out of range; valid: an integer >= 1"),
    (BENCH + ["--budgets", "{d}/budgets_foreign"], 'budget file {d}/budgets_foreign/dev.json has no "entries" object'),
    (BENCH + ["--compare", "{d}/missing.jsonl"], "results file '{d}/missing.jsonl' does not exist"),
    (BENCH + ["--compare", "{d}/bad.json"], "{d}/bad.json:2: not valid JSON (Expecting value)"),
    (BENCH + ["--compare", "{d}/torn.jsonl"], "{d}/torn.jsonl:2: torn last line"),
    # vitcore report
    (["report", "{d}/missing.jsonl", "--out", "{d}/r"], "results file '{d}/missing.jsonl' does not exist"),
    (["report", "{d}", "--out", "{d}/r"], "results file '{d}' is a folder"),
    (["report", "{d}/bad.json", "--out", "{d}/r"], "{d}/bad.json:2: not valid JSON"),
    (["report", "{d}/foreign.jsonl", "--out", "{d}/r"], "{d}/foreign.jsonl:2: JSON int '42' is not a point; "
                                                        "`vitcore report --skip-bad` reports the rest"),
    (["report", "{d}/torn.jsonl", "--out", "{d}/r"], "{d}/torn.jsonl:2: torn last line"),
    (["report", "{d}/side/points.jsonl", "--out", "{d}/r"], "skipped list {d}/side/skipped.json:1 is not valid JSON"),
    (REPORT + ["--baseline", "{d}/missing.json"], "results file '{d}/missing.json' does not exist"),
    (REPORT + ["--history", "{d}/history.json"], "--history {d}/history.json:2 is not valid JSON"),
    (REPORT + ["--history", "{d}/missing.json"], "--history '{d}/missing.json' does not exist"),
    (REPORT + ["--budgets", "{d}/budgets_bad"], "budget file {d}/budgets_bad/dev.json:2 is not valid JSON"),
    (REPORT + ["--fail-on", "speed:5%"], "bad --fail-on item 'speed:5%'; expected METRIC:N% with METRIC one of"),
    (["report", "{d}/ok.jsonl", "--out", "{d}/afile"], "--out '{d}/afile' is a file"),
    (["report", "{d}/ok.jsonl"], "the following arguments are required: --out"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[f"{a[0]}:{' '.join(a[-2:])}" for a, _ in CASES])
def test_bad_input_is_one_line(d, argv, needle):
    line = error_line(*run(*(a.format(d=d) for a in argv)))
    assert needle.format(d=d) in line


def _gpu_runs_it(argv):
    """On a GPU host these are no bad input: they would train."""
    import torch

    return pytest.param(argv, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"))


# Issue 26's eight (the first eight), then others a user would try: in a fresh process (the import-time
# output of torch, datasets and colossalai), with an unknown package making noise as they are imported.
FRESH = [
    ["train", "--epochs", "-1"], ["train", "--lr", "nan"], ["train", "--nproc", "0"],
    ["train", "--dataset", "/nonexistent/dog_food"], ["train", "--dataset", "{d}/labels"],
    ["train", "--weights", "/nonexistent"], ["train", "--plugin", "hybrid_parallel", "--tp-size", "3", "--nproc", "3"],
    _gpu_runs_it(["train", "--device", "cuda"]),
    ["train", "--batch-size", "abc"], ["train", "--lr", "-1"], ["train", "--subset", "0"], ["train", "--seed", "x"],
    ["train", "--checkpoint-dir", "{d}/afile"], ["train", "--timeout", "0"], ["train", "--frobnicate"],
    ["train", "--dataset", "{d}/trunc"], _gpu_runs_it(["train", "--plugin", "gemini"]), ["fly"],
    ["bench", "--batch-sizes", "0", "--out", "{d}/o"], ["bench", "--precisions", "fp16", "--out", "{d}/o"],
    ["report", "{d}/foreign.jsonl", "--out", "{d}/r"], ["plugins", "--device", "tpu"],
]


@pytest.mark.parametrize("argv", FRESH, ids=lambda a: " ".join(a))
@pytest.mark.slow
def test_bad_input_in_a_fresh_process_is_its_error_line_alone(d, tmp_path, argv):
    from tests.support import third_party_noise as noise

    p = subprocess.run([sys.executable, "-m", "vitcore.cli", *(a.format(d=d) for a in argv)], capture_output=True,
                       text=True, timeout=300, env=noise.environ(tmp_path), cwd=ROOT)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("vitcore: error: ")]
    assert p.returncode != 0 and len(errors) == 1 and len(lines) <= 3, p.stderr[-3000:]  # at most 2 other lines
    assert "Traceback" not in p.stderr and noise.MARK not in p.stderr + p.stdout, p.stderr[-3000:]
    assert list((tmp_path / "tmp").iterdir()) == []  # refused: no log left behind
    assert not (d / "o").exists() and not (d / "r").exists()


@pytest.mark.parametrize("option,needle", [
    ("speed=fast", "--option 'speed=fast': expected NAME=VALUE with NAME one of attention, grad_checkpoint"),
    ("freeze_gc", "--option 'freeze_gc': expected NAME=VALUE"),
    ("freeze_gc=maybe", "--option 'freeze_gc=maybe': freeze_gc takes true or false"),
    ("attention=flash", "unknown attention 'flash'; valid: eager, sdpa"),
])
def test_bench_option(d, option, needle):
    line = error_line(*run(*(a.format(d=d) for a in BENCH), f"--option={option}"))
    assert needle in line


def _ints(text: str):
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None


@settings(max_examples=40, deadline=None)
@given(text=st.one_of(
    st.lists(st.integers(-3, 64), min_size=1, max_size=4).filter(lambda v: min(v) < 1).map(lambda v: ",".join(map(str, v))),
    st.text(alphabet="0123456789ab ,.-+", max_size=8).filter(
        lambda t: t != "--" and not (_ints(t) and min(_ints(t)) >= 1))))  # argparse reads "--" as ""
def test_batch_sizes_property(tmp_path_factory, text):
    out = tmp_path_factory.getbasetemp() / "bs"
    line = error_line(*run("bench", "--device", "cpu", "--model", "vit-tiny", f"--batch-sizes={text}", "--out", str(out)))
    values = _ints(text)
    named = repr(text) if values is None else ",".join(map(str, values)) or "''"
    assert f"--batch-sizes {named}" in line or f"--batch-sizes: {named}" in line, line


def _fail_on_is_valid(text: str) -> bool:
    try:
        budgets.parse_fail_on(text)
        return True
    except ValueError:
        return False


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="abcdeghilmnoprstuvy_:%,.0123456789 ", min_size=1, max_size=24).filter(
    lambda t: t.strip() and not _fail_on_is_valid(t)))
def test_fail_on_property(tmp_path_factory, text):
    out = tmp_path_factory.getbasetemp() / "fo"
    line = error_line(*run("bench", "--device", "cpu", "--model", "vit-tiny", f"--fail-on={text}", "--out", str(out)))
    parts = [text] + [p.strip() for p in text.split(",")]
    assert any(repr(p) in line for p in parts), line


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from([*OPTIONS, "speed", "Attention", ""]), sep=st.sampled_from(["=", "", ":"]),
       value=st.text(alphabet="abeflmnorstuy01", max_size=6))
def test_option_property(tmp_path_factory, name, sep, value):
    valid = sep == "=" and name in OPTIONS and (value in ATTENTION if name == "attention" else
                                                value.lower() in ("true", "false"))
    if valid:
        return
    out = tmp_path_factory.getbasetemp() / "opt"
    line = error_line(*run("bench", "--device", "cpu", "--model", "vit-tiny", "--plugins", "torch_ddp",
                           "--no-reference", f"--option={name}{sep}{value}", "--out", str(out)))
    assert repr(f"{name}{sep}{value}") in line, line


HOLDER = """import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "since": "then"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the --out lock needs fcntl (POSIX)")
def test_out_in_use_by_a_live_run(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / ".vitcore.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = error_line(*run(*(a.format(d=tmp_path) for a in BENCH[:-1]), str(tmp_path)))
    finally:
        holder.kill()
        holder.wait()
    assert f"--out '{tmp_path}' is in use by another vitcore run (pid {holder.pid}, since then)" in line


def test_report_skip_bad_names_each_line_and_reports_the_rest(d, tmp_path):
    rc, err = run("report", str(d / "torn.jsonl"), str(d / "foreign.jsonl"), "--skip-bad", "--out", str(tmp_path))
    assert rc == 0, err[-3000:]
    assert f"[vitcore] skipped {d}/torn.jsonl:2: torn last line" in err
    assert f"[vitcore] skipped {d}/foreign.jsonl:2: JSON int '42' is not a point" in err
    assert len(json.loads((tmp_path / "points.json").read_text())) == 2


@pytest.mark.slow
def test_pytest_unknown_plugin_is_a_usage_error_not_an_internal_error():
    p = subprocess.run([sys.executable, "-m", "pytest", "--plugin=nope", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "tests/test_registry.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == pytest.ExitCode.USAGE_ERROR and "INTERNALERROR" not in p.stdout + p.stderr, p.stderr
    assert len(lines) == 1 and lines[0].startswith("ERROR: vitcore: unknown plugin 'nope'; valid names: torch_ddp")


class _Options:
    """What the root conftest's option check reads of a pytest config."""

    def __init__(self, **given):
        self.values = {"--plugin": None, "--model": None, "--perf-batch-sizes": "32,128", "--world-sizes": "2,4,8",
                       "--budgets": "fixtures/budgets", "--update-budgets": False,
                       "--perf-processes": 1, "--perf-repeats": 5, "--perf-steps": 20, "--gpu-workers": 4,
                       "--dataset": "auto", "--allow-missing-budgets": False, "--allow-invariant-change": False,
                       "--perf-min-window": 0.3, "--perf-inject-device-pct": 0.0, "--results-out": None, "--compile": False,
                       "verbose": 0} | given

    def getoption(self, name):
        return self.values[name]


def test_pytest_gpu_workers_must_not_be_negative():
    root_conftest = sys.modules["conftest"]
    with pytest.raises(pytest.UsageError, match="vitcore: --gpu-workers -1 must be an integer >= 0"):
        root_conftest._check_options(_Options(**{"--gpu-workers": -1}))
    root_conftest._check_options(_Options(**{"--gpu-workers": 0}))  # 0: all in one process


def test_pytest_perf_counts_must_be_positive():
    root_conftest = sys.modules["conftest"]
    for flag in ("--perf-processes", "--perf-repeats", "--perf-steps"):
        with pytest.raises(pytest.UsageError, match=f"vitcore: {flag} 0 must be an integer >= 1"):
            root_conftest._check_options(_Options(**{flag: 0}))


@pytest.mark.parametrize("given,needle", [
    ({"--budgets": "{d}/budgets_bad"}, "vitcore: budget file {d}/budgets_bad/dev.json:2 is not valid JSON"),
    ({"--budgets": "{d}/missing"}, "vitcore: --budgets '{d}/missing' is not a folder"),
    ({"--model": "vit-huge"}, "vitcore: unknown model 'vit-huge'; valid: vit-base, vit-tiny"),
    ({"--perf-batch-sizes": "32,x"}, "vitcore: --perf-batch-sizes '32,x': expected positive integers"),
    ({"--world-sizes": "0"}, "vitcore: --world-sizes '0': expected positive integers"),
])
def test_pytest_options_are_checked_at_session_start(d, given, needle):
    root_conftest = sys.modules["conftest"]  # the repository root's, loaded by pytest
    with pytest.raises(pytest.UsageError) as e:
        root_conftest._check_options(_Options(**{k: v.format(d=d) for k, v in given.items()}))
    assert str(e.value).startswith(needle.format(d=d)) and "\n" not in str(e.value)


def test_an_epoch_without_an_optimizer_step_is_an_error_in_the_run_too():
    """Beyond the CLI's check: the training loop itself refuses (any caller, any world size)."""
    from vitcore import DataError
    from vitcore.processes import launch
    from vitcore.spec.config import RunConfig
    from vitcore.training import train

    cfg = RunConfig(plugin="torch_ddp", model="vit-tiny", dataset="embedded", subset=30, batch_size=32, device="cpu")
    with pytest.raises(DataError, match=r"the train split has 30 images, 30 per data-parallel rank \(1 ranks\)"):
        launch.run(train.finetune, cfg, world_size=1, device="cpu")
