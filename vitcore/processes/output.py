"""The console: the suite's own lines, and nothing else. The bench prints one line per finished point, a
bar that advances per point with an ETA, a closing summary; every command sends what is not its own to
a log, with one line saying how many lines went there (`ThirdPartyOutput`).

Workers append their points to OUT/points.jsonl as each finishes; the parent learns of them by
reading that file (a thread polls it while a group runs), so the line appears when the point is
written, not when its group ends. Worker processes write their stdout and stderr into the log file
(WorkerOutput, which vitcore.processes.launch routes).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "bench.log"
# The shapes of the suite's own console lines; anything else on the console is a leak.
OWN_LINE = re.compile(r"\[vitcore\] |\[\d+/\d+\] |vitcore: ")
OWN_LOGGER = "vitcore"
_RECORD = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def log_path(out_dir) -> Path:
    return Path(out_dir) / LOG_NAME


def is_own(line: str) -> bool:
    """`[vitcore] ...`, a bench point's `[n/N] ...` or `vitcore: error: ...`."""
    return bool(OWN_LINE.match(line))


def is_own_logger(name: str) -> bool:
    return name == OWN_LOGGER or name.startswith(OWN_LOGGER + ".")


class OwnLogHandler(logging.Handler):
    """The suite's own logger records (DATASET:, WEIGHTS: notices) on the console as `[vitcore] ...`;
    `stream` is asked at each record, so a redirected sys.stderr is followed."""

    def __init__(self, stream=lambda: sys.stderr):
        super().__init__()
        self.setFormatter(logging.Formatter("[vitcore] %(message)s"))
        self._stream = stream

    def emit(self, record):
        try:
            s = self._stream()
            s.write(self.format(record) + "\n")
            s.flush()
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class ThirdPartyOutput:
    """Everything that is not the suite's own output goes to the run's log: Python warnings, `logging`
    records of any logger outside `vitcore.*` (whatever handlers their library gave them: colossalai
    adds its own), raw writes to fds 1 and 2 inside `quiet()` (heavy imports: colossalai prints at
    import) and, through `worker_output()`, the workers' stdout and stderr. A rule, not a list of known
    messages: a machine with another CPU brings messages nobody has seen (bitsandbytes' AVX512-BF16 one).

    Held in memory until `attach` names the log, so a run refused before it starts leaves none behind;
    `summary_line()` says how many lines went there. verbose: also echoed to the console. A context
    manager: leaving it restores warnings and logging as they were (cli.main runs inside tests too)."""

    def __init__(self, *, verbose: bool = False):
        self.verbose = verbose
        self.path: Path | None = None
        self.held: list[str] = []
        self._header = (f"--- vitcore run (pid {os.getpid()}) at "
                        f"{_dt.datetime.now().isoformat(timespec='seconds')}: {' '.join(sys.argv)}\n")
        self._start = 0  # the log's size when attached (a resumed bench appends to its log)
        self._own_lines = 0  # lines the suite itself wrote there (the header, the bench's table)
        self._written = self._existed = False
        self._capture = None  # quiet()'s file while it runs
        self._own_target = None
        self.active = False

    def __enter__(self) -> ThirdPartyOutput:
        self._console, self.active = sys.stderr, True
        self._showwarning, warnings.showwarning = warnings.showwarning, self._show
        self._handle = handle = logging.Logger.handle
        tp = self

        def route(logger, record):  # every logger's records pass here, before any of its handlers
            if is_own_logger(logger.name):
                return handle(logger, record)
            if not logger.disabled and logger.filter(record):
                tp._write(_RECORD.format(record) + "\n")
            return None

        logging.Logger.handle = route
        self._own = OwnLogHandler(self._own_stream)
        logging.getLogger(OWN_LOGGER).addHandler(self._own)
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        warnings.showwarning = self._showwarning
        logging.Logger.handle = self._handle
        logging.getLogger(OWN_LOGGER).removeHandler(self._own)
        if (self.path is not None and not self._existed and self.path.exists() and not self.lines()
                and self._own_lines <= 1):
            self.path.unlink()  # nothing but the header went there (a train run's log in $TMPDIR)

    def _show(self, message, category, filename, lineno, file=None, line=None):
        self._write(warnings.formatwarning(message, category, filename, lineno, line))

    def _own_stream(self):
        return self._own_target if self._capture is not None else sys.stderr

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._capture is not None:  # in order with quiet()'s raw writes, echoed with them
            self._capture.write(text)
            return
        if self.verbose:
            self._console.write(text)
            self._console.flush()
        if self.path is None:
            self.held.append(text)
        else:
            self._append(text)

    def _append(self, text: str, own_lines: int = 0) -> None:
        if not self._written:
            text, own_lines, self._written = self._header + text, own_lines + 1, True
        with open(self.path, "a") as f:
            f.write(text)
        self._own_lines += own_lines

    def attach(self, path) -> Path:
        """The log is `path` from now on (appended); what was held goes there."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._existed = self.path.exists()
        self._start = self.path.stat().st_size if self._existed else 0
        held, self.held = "".join(self.held), []
        if held:
            self._append(held)
        return self.path

    def note(self, text: str) -> None:
        """The suite's own text for the log (the bench's table of points): not counted as third-party."""
        self._append(text, text.count("\n"))

    def worker_output(self, *, console_lines: bool = False):
        """Where spawned workers write (the attached log); console_lines: their `is_own` lines stay on
        the console (vitcore train's epoch lines)."""
        self._append("")  # the header before the workers' lines
        return WorkerOutput(str(self.path), self.verbose, console_lines)

    def lines(self) -> int:
        """Third-party lines in the log since `attach` (the workers' included)."""
        if self.path is None or not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            f.seek(self._start)
            return max(0, f.read().count(b"\n") - self._own_lines)

    def summary_line(self) -> str | None:
        n = self.lines()
        return f"[vitcore] {n} line{'s' * (n != 1)} of third-party output in {self.path}" if n else None

    @contextlib.contextmanager
    def quiet(self):
        """While the block runs, raw writes to stdout and stderr go to the log: sys.stdout/sys.stderr and
        fds 1 and 2 (C extensions' prints too). For heavy imports and dataset checks, which print
        nothing of the suite's own; its logger's records still reach the console."""
        if self._capture is not None:
            yield
            return
        out, err = sys.stdout, sys.stderr
        for s in (out, err):
            with contextlib.suppress(Exception):
                s.flush()
        tmp = tempfile.TemporaryFile()
        saved = {}
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                saved[fd] = os.dup(fd)
                os.dup2(tmp.fileno(), fd)
        own_fd = _fileno(err) == 2 and 2 in saved
        self._own_target = os.fdopen(os.dup(saved[2]), "w", buffering=1) if own_fd else err
        self._capture = open(os.dup(tmp.fileno()), "w", buffering=1, errors="replace")
        sys.stdout = sys.stderr = _Sink(self)
        try:
            yield
        finally:
            self._capture.flush()
            _flush_c_stdio()
            sys.stdout, sys.stderr = out, err
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            self._capture.close()
            if own_fd:
                self._own_target.close()
            self._capture = self._own_target = None
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            tmp.close()
            self._write(text)


class _Sink(io.TextIOBase):
    """sys.stdout and sys.stderr inside quiet(). A library may keep the stream it found at import (a
    logging.StreamHandler() does): its later writes still reach the log, and the console once the
    command has ended, never a closed file."""

    def __init__(self, tp: ThirdPartyOutput):
        self.tp = tp

    def write(self, text: str) -> int:
        if self.tp.active:
            self.tp._write(text)
        else:
            (sys.__stderr__ or io.StringIO()).write(text)
        return len(text)

    def fileno(self) -> int:
        return 2  # fd 2 goes where this stream goes while quiet() runs (faulthandler asks for it)

    @property
    def encoding(self) -> str:
        return "utf-8"


@dataclass(frozen=True)
class WorkerOutput:
    """Where a spawned worker's stdout and stderr go: appended to `log` (third-party warnings and
    prints, e.g. colossalai's "install apex"), and also to the console's stderr when `verbose`.
    console_lines: the suite's own lines (is_own: `[vitcore] ...`, as train's epoch
    lines) stay on the console's stdout or stderr, as written; rank 0's logger notices are among them."""

    log: str
    verbose: bool = False
    console_lines: bool = False


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except Exception:  # noqa: BLE001 - StringIO, pytest's capture
        return None


def _flush_c_stdio() -> None:
    """printf's buffer, or a C extension's notice would reach the console once fd 1 is restored."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
