"""A bench's console: one line per finished point, a bar that advances per point with an ETA, and
the closing summary.

Workers append their points to OUT/points.jsonl as each finishes; the parent learns of them by
reading that file (a thread polls it while a group runs), so the line appears when the point is
written, not when its group ends.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from vitcore.processes.output import log_path
from vitcore.spec import points
from vitcore.store import results as res

POLL_S = 0.5

def label(p) -> str:
    """'torch_ddp fp32 bs32' (plus the world size, profile and variant where not the default)."""
    get = p.get if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
    parts = [get("plugin"), get("precision") or "", f"bs{get('batch_size')}"]
    if (get("world_size") or 1) > 1:
        parts.append(f"ws{get('world_size')}")
    if get("profile") not in (None, "fast", "reference"):  # the reference's profile is its name's
        parts.append(get("profile"))
    if get("variant"):
        parts.append(get("variant"))
    return " ".join(x for x in parts if x)


def point_line(p: dict, seconds: float) -> str:
    """`torch_ddp fp32 bs32: 228 img/s ±12%, 2.1 GiB, 41 s`; ± is half the windows' (max - min) / median
    (the report's spread); GiB is peak tensor memory where measured (a GPU)."""
    if p.get("status") != "ok":
        why = (p.get("error") or "").splitlines()[-1][:120] if p.get("status") == "error" else ""
        return f"{label(p)}: {p.get('status')}{f' ({why})' if why else ''}, {seconds:.0f} s"
    parts = [f"{p['images_per_s']:.4g} img/s" + (f" ±{p['spread'] / 2:.0%}" if p.get("spread") is not None else "")]
    if p.get("peak_mem_allocated_gib") is not None:
        parts.append(f"{p['peak_mem_allocated_gib']:.1f} GiB")
    parts.append(f"{seconds:.0f} s")
    return f"{label(p)}: {', '.join(parts)}"


def duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


class Progress:
    """Reports each planned point once, as it appears in the results file."""

    def __init__(self, path, planned: list[tuple], *, stream=None, bar: bool | None = None):
        self.path = Path(path)
        self.stream = stream or sys.stderr
        self.planned = set(planned)
        self.total = len(self.planned)
        self.seen = {points.key(p) for p in res.read_points(self.path)} & self.planned
        self.done = 0
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()
        use_bar = self.stream.isatty() if bar is None else bar
        self.bar = None
        if use_bar and self.total:
            # tqdm: only for an interactive progress bar
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="point", desc="bench", file=self.stream, leave=False)
        self._stop = threading.Event()
        self._thread = None

    def group_started(self) -> None:
        with self.lock:
            self.last = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="vitcore-progress")
        self._thread.start()

    def group_ended(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        with self.lock:
            for p in res.read_points(self.path):
                k = points.key(p)
                if k in self.planned and k not in self.seen:
                    self.seen.add(k)
                    self._report(p)

    def _report(self, p: dict) -> None:
        now = time.monotonic()
        self.done += 1
        line = f"[{self.done}/{self.total}] {point_line(p, now - self.last)}"
        self.last = now
        left = self.total - self.done
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:  # no bar (not a terminal): the line carries the ETA
            eta = (now - self.start) / self.done * left
            print(line + (f" (ETA {duration(eta)})" if left else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(rows: list[dict], reused: int, seconds: float, out_dir) -> str:
    """The closing line: points by status, time, and where the log and the results are."""
    counts = {s: sum(p.get("status") == s for p in rows) for s in ("ok", "oom")}
    counts["error"] = len(rows) - counts["ok"] - counts["oom"]
    status = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")
    return (f"[vitcore] bench done in {duration(seconds)}: {len(rows) - reused} measured, {reused} reused "
            f"({status}); results {Path(out_dir) / 'points.jsonl'}, log {log_path(out_dir)}")


def report_line(head: dict) -> str:
    """The report's summary (vitcore.reporting.analysis.summary) in one line: the fastest plugin point per batch
    size, the verdict counts, the number of failures (each is printed on its own line above)."""
    def fastest(r):
        p = r["fastest"]
        if not p:
            return f"bs{r['batch_size']} none{' quiet enough' if head['cpu'] else ''}"
        ratio = f", {p['ratio_to_reference']:.2f}x the reference" if p.get("ratio_to_reference") else ""
        return f"bs{r['batch_size']} {p['plugin']} {p['precision']} ({p['images_per_s']:.4g} img/s{ratio})"

    counts = ", ".join(f"{n} {k}" for k, n in head["counts"].items() if n)
    cpu = " (CPU: a smoke test, saying nothing about GPUs; fastest among quiet points)" if head["cpu"] else ""
    return (f"[vitcore] summary{cpu}: fastest {'; '.join(map(fastest, head['rows']))}; verdicts: {counts or 'none'}; "
            f"failures: {len(head['failures'])}")
