"""vitcore's command line run in this process, as the bad-input tests read it: the exit code and stderr
(stdout discarded), and the one error line a refused command must print."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from vitcore.cli import commands


def run(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            rc = commands.main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, err.getvalue()


def error_line(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("vitcore: error: "), f"rc={rc}\n{err[-3000:]}"
    return lines[0]
