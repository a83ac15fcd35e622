"""The console rule (issue 26): the console carries the suite's own lines only (`[vitcore] ...`,
`[n/N] ...`, `vitcore: error: ...`); Python warnings, other packages' `logging` records, raw writes
while heavy modules are imported and the workers' stdout and stderr go to the run's log, and one line
says how many lines went there. Tested with a package nobody has listed (tests/support/third_party_noise.py),
never with a list of known messages, so that it holds on any CPU. The tiny bench's part is in
tests/test_cli.py, the bad inputs' in tests/test_bad_input.py.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.support import third_party_noise as noise
from vitcore.cli import commands as cli
from vitcore.processes import launch
from vitcore.processes import output as console

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"\[vitcore\] (\d+) lines? of third-party output in (\S+)$")
TINY_TRAIN = ["train", "--device", "cpu", "--model", "vit-tiny", "--dataset", "embedded", "--subset", "40",
              "--batch-size", "8", "--epochs", "1"]


def cli_with_noise(folder, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "vitcore.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=noise.environ(folder), cwd=ROOT)


def console_lines(p) -> list[str]:
    """Every line on the console is one of the suite's own shapes; none is the injected noise."""
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert all(console.is_own(ln) for ln in lines), p.stdout + p.stderr
    assert noise.MARK not in p.stdout + p.stderr
    return lines


def counted_log(p, own_lines: int = 1) -> str:
    """The last stderr line names the log and counts its third-party lines (all but the suite's own:
    the run's header line, and what own_lines adds)."""
    m = SUMMARY.match(p.stderr.splitlines()[-1])
    assert m, p.stderr
    text = Path(m[2]).read_text()
    assert int(m[1]) == len(text.splitlines()) - own_lines, text
    return text


class ZzWarning(Warning):
    """A warning category nobody filters."""


# --- in this process ------------------------------------------------------------------------------------
def test_every_channel_goes_to_the_log_and_the_suite_s_own_records_to_the_console(tmp_path, capfd):
    handle, show = logging.Logger.handle, warnings.showwarning
    err = io.StringIO()
    with redirect_stderr(err), console.ThirdPartyOutput() as tp:
        with tp.quiet():  # as around the heavy imports
            os.write(1, b"zz fd 1\n")
            os.write(2, b"zz fd 2\n")
            print("zz print")
            sys.stderr.write("zz sys.stderr\n")
            own = logging.getLogger("zz_pkg.own")  # a library's own handler, bound to the stderr of now
            own.addHandler(logging.StreamHandler())
            own.propagate = False
            logging.getLogger("vitcore.inputs.data").warning("DATASET: a notice while quiet")
        logging.getLogger("zz_pkg").warning("zz record")
        own.warning("zz own handler")
        logging.getLogger().error("zz root")
        with warnings.catch_warnings():  # pytest's configuration ignores UserWarning
            warnings.simplefilter("always")
            warnings.warn("zz warning", ZzWarning, stacklevel=1)
        logging.getLogger("vitcore.inputs.data").warning("DATASET: a notice")
        assert tp.held and not list(tmp_path.iterdir())  # held until the run has its log
        log = tp.attach(tmp_path / "run.log")
        summary = tp.summary_line()
    assert logging.Logger.handle is handle and warnings.showwarning is show  # as it was
    text = log.read_text()
    for needle in ("zz fd 1", "zz fd 2", "zz print", "zz sys.stderr", "WARNING zz_pkg: zz record",
                   "WARNING zz_pkg.own: zz own handler", "ERROR root: zz root", "ZzWarning: zz warning"):
        assert needle in text
    assert err.getvalue() == "[vitcore] DATASET: a notice while quiet\n[vitcore] DATASET: a notice\n"
    assert "zz" not in "".join(capfd.readouterr())
    assert summary == f"[vitcore] {len(text.splitlines()) - 1} lines of third-party output in {log}"
    own.warning("zz after the command")  # the handler's stream outlives the command: no closed file
    assert "Logging error" not in capfd.readouterr().err


def test_nothing_held_means_no_log_and_no_line(tmp_path):
    with redirect_stderr(io.StringIO()), console.ThirdPartyOutput() as tp:
        logging.getLogger("vitcore").warning("own")
        tp.attach(tmp_path / "run.log")
        assert tp.summary_line() is None
    assert not (tmp_path / "run.log").exists()


def test_verbose_also_echoes(tmp_path):
    err = io.StringIO()
    with redirect_stderr(err), console.ThirdPartyOutput(verbose=True) as tp:
        logging.getLogger("zz_pkg").warning("zz echoed")
        tp.attach(tmp_path / "run.log")
    assert "zz echoed" in err.getvalue() and "zz echoed" in (tmp_path / "run.log").read_text()


def test_a_failure_of_an_in_process_run_is_one_line_with_the_traceback_in_the_log(tmp_path, monkeypatch):
    from vitcore.training import train

    def boom(*args):
        raise RuntimeError("boom (test)\nsecond line")

    monkeypatch.setattr(train, "finetune", boom)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = cli.main([*TINY_TRAIN, "--out", str(tmp_path / "h.json")])
    errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("vitcore: error:")]
    assert rc == 1 and errors == [f"vitcore: error: training failed: RuntimeError: boom (test) (traceback in "
                                  f"{tmp_path / 'h.log'})"], err.getvalue()
    assert "Traceback" not in err.getvalue() and "Traceback" in (tmp_path / "h.log").read_text()


def own_and_foreign_lines():
    """Run in a spawned worker: one of the suite's lines on each stream, and third-party ones."""
    print("[vitcore] an own line (test)", flush=True)
    print("a third-party print (test)", flush=True)
    sys.stderr.write("[vitcore] an own stderr line (test)\nthird-party stderr (test)\n")
    sys.stderr.flush()
    os.write(2, b"a raw third-party write (test)")  # no newline: flushed at the end
    return 1


@pytest.mark.slow
def test_workers_own_lines_stay_on_the_console_the_rest_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / "run.log"
    assert launch.spawn(own_and_foreign_lines, (), world_size=1, device="cpu", timeout_s=300,
                        output=launch.WorkerOutput(str(log), console_lines=True)) == [1]
    seen = capfd.readouterr()
    assert "[vitcore] an own line (test)" in seen.out and "[vitcore] an own stderr line (test)" in seen.err
    assert "third-party" not in seen.out + seen.err
    text = log.read_text()
    for needle in ("a third-party print (test)\n", "third-party stderr (test)\n", "a raw third-party write (test)\n"):
        assert needle in text
    assert "[vitcore]" not in text


# --- the CLI, with an unknown package making noise in every process ------------------------------------
def test_a_refused_train_prints_its_error_alone_and_leaves_no_log(tmp_path):
    p = cli_with_noise(tmp_path, "train", "--device", "cpu", "--nproc", "0")  # after torch's import
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["vitcore: error: --nproc 0 is out of range; valid: an integer >= 1"], p.stderr
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_train_sends_unknown_output_to_its_log_and_counts_it(tmp_path, nproc):
    p = cli_with_noise(tmp_path, *TINY_TRAIN, "--nproc", str(nproc), "--out", str(tmp_path / "h.json"))
    assert p.returncode == 0, p.stderr[-3000:]
    lines = console_lines(p)
    assert [ln.split()[1] for ln in p.stdout.splitlines()] == ["plugin=torch_ddp", "epoch", "history"], p.stdout
    assert len(lines) == 4 and SUMMARY.match(lines[-1])[2] == str(tmp_path / "h.log")
    text = counted_log(p)
    for phase in ("import torch", "run finetune"):  # the parent's import; the run, in-process or a worker's
        for channel in ("a record of an unknown logger", "a record through its own StreamHandler",
                        "a record of the root logger", "a warning"):
            assert f"{noise.MARK} {phase}: {channel}" in text, (phase, channel)
    raw = ["import torch"] + (["run finetune"] if nproc > 1 else [])  # the parent routes raw writes while importing
    for phase in raw:
        for channel in ("a print", "a write to sys.stderr", "os.write to fd 1", "os.write to fd 2"):
            assert f"{noise.MARK} {phase}: {channel}" in text, (phase, channel)


@pytest.mark.slow
def test_report_sends_unknown_output_to_its_log_and_counts_it(tmp_path):
    points = ROOT / "reports/h100/2026-11-24-0abb0f6/points.jsonl"
    p = cli_with_noise(tmp_path, "report", str(points), "--out", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr[-3000:]
    console_lines(p)
    text = counted_log(p)
    assert f"{noise.MARK} import matplotlib: os.write to fd 2" in text and (tmp_path / "r" / "report.log").is_file()
