"""`vitcore ab`: wall time decided on a noisy host, base revision against the working tree in one run.

Wall-clock images/s moves 20-50% with the host (the H200's host is half as fast as the H100's for
host-bound plugins), so a budget recorded on another day or runner cannot judge it. As asv's
`continuous` and Bencher's relative mode do, this measures the base (a git worktree at --base) and
the head (this checkout) on the same GPU in one job, in fresh processes interleaved A B B A A B ...
(a drift of the host during the run falls on both sides alike), and judges the head's points against
the base's by the one rule (budgets.compare_runs): per-process medians by the exact U test at 99%
(5 processes a side decide), device time, launches and allocated memory by their thresholds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vitcore import VitcoreError
from vitcore.gate import budgets
from vitcore.spec import points

if TYPE_CHECKING:
    from vitcore.cli.typed import AbOptions

HEAD_ROOT = Path(__file__).resolve().parents[2]  # vitcore/cli/ab.py -> the checkout this vitcore runs from


def schedule(n: int) -> list[str]:
    """The order of 2n processes: ABBA blocks (base, head, head, base, ...), so that a linear drift of
    the host over the run adds the same to both sides; n processes a side."""
    if n < 1:
        raise VitcoreError(f"--processes {n} must be an integer >= 1")
    order = []
    for i in range(n):
        order += ["base", "head"] if i % 2 == 0 else ["head", "base"]
    return order


def resolve(rev: str, repo: Path = HEAD_ROOT) -> str:
    """The full sha of `rev` in the checkout's repository; one line naming it where it is not one."""
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise VitcoreError(f"--base {rev!r}: git is not usable here ({type(e).__name__}); `vitcore ab` needs the "
                           "suite's git checkout") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise VitcoreError(f"--base {rev!r} is not a commit of {repo} (try a sha, a branch or HEAD~1; "
                           "`git log --oneline` lists them)")
    return out.stdout.strip()


@contextlib.contextmanager
def worktree(sha: str, dest: Path, repo: Path = HEAD_ROOT) -> Iterator[Path]:
    """A detached git worktree of `sha` at dest, removed at the end (also when interrupted)."""
    if dest.exists():
        raise VitcoreError(f"{dest} exists: remove it, or give another --out")
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(dest), sha], cwd=repo, check=True,
                   capture_output=True, timeout=120)
    try:
        yield dest
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(dest)], cwd=repo, capture_output=True, timeout=120)


def bench_argv(opts: AbOptions, out: Path, side: str) -> list[str]:
    """One process's `vitcore bench` command line (the head side carries the injected change, if any)."""
    argv = [sys.executable, "-m", "vitcore.cli", "bench", "--json", "--no-reference", "--processes", "1",
            "--out", str(out), "--device", opts.device, "--plugins", ",".join(opts.plugins),
            "--batch-sizes", ",".join(map(str, opts.batch_sizes)), "--steps", str(opts.steps),
            "--repeats", str(opts.repeats), "--warmup", str(opts.warmup), "--min-window", str(opts.min_window)]
    if opts.model:
        argv += ["--model", opts.model]
    if side == "head":
        for flag, value in (("--inject-host-pct", opts.inject_host_pct), ("--inject-device-pct", opts.inject_device_pct)):
            if value:
                argv += [flag, str(value)]
    return argv


def measure(argv: list[str], tree: Path, log: Path, timeout_s: float, code: str | None = None) -> list[dict]:
    """Run one bench process in `tree` (its own vitcore first on the path); its points (stdout JSON)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tree)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    # the points' git_sha: `code` where git cannot tell (a tree copied without .git reads whatever
    # repository encloses it: an H200 A/B's points named a stale 1d2c6fa-dirty), else the tree's own commit
    env.pop("VITCORE_GIT_SHA", None)
    if code:
        env["VITCORE_GIT_SHA"] = code
    with open(log, "a") as f:
        f.write(f"--- {' '.join(argv)} (in {tree})\n")
        f.flush()
        try:
            proc = subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=f, text=True,
                                  timeout=timeout_s, start_new_session=False)
        except subprocess.TimeoutExpired:
            raise VitcoreError(f"a bench process in {tree} ran past {timeout_s:.0f} s (log: {log})") from None
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode not in (0, 1) or not rows:  # 1: a point failed; it is judged as such
        raise VitcoreError(f"a bench process in {tree} exited {proc.returncode} with {len(rows)} points (log: {log})")
    return rows


def pooled(runs: list[list[dict]]) -> list[dict]:
    """One point per identity from the processes of one side (timing.pool: windows pooled, every
    process's values kept)."""
    from vitcore.measure.timing import pool  # torch: only once the processes have run

    by_key: dict[tuple, list[dict]] = {}
    for rows in runs:
        for p in rows:
            by_key.setdefault(points.key(p), []).append(p)
    return [pool(same) for same in by_key.values()]


def check(opts: AbOptions) -> None:
    """Every option, before a worktree is made or a process started (ab's own are AbOptions'): the
    head's bench command line through bench's own parser, options and checks (so each bad value is
    bench's one line)."""
    from vitcore.cli import options, preflight, typed  # the CLI's own: light

    argv = bench_argv(opts, Path(opts.out) / "head" / "p0", "head")
    bench = typed.BenchOptions.from_args(options.build_parser().parse_args(argv[3:]))  # after `-m vitcore.cli`
    preflight.check_bench(bench)


def run(opts: AbOptions) -> int:
    """Measure base and head interleaved, judge head against base, write OUT/{base,head}.jsonl and
    OUT/ab.json; exit 1 on a regression (two-sided invariants included), 0 otherwise."""
    started = time.monotonic()
    check(opts)
    for flag, tree in (("--base-tree", opts.base_tree), ("--head-tree", opts.head_tree)):
        # vitcore/cli.py before the subpackages (issue 28), vitcore/cli/ since: `python -m vitcore.cli` runs both
        if tree and not any((Path(tree) / "vitcore" / c).is_file() for c in ("cli.py", "cli/__main__.py")):
            raise VitcoreError(f"{flag} {tree!r} holds no vitcore/cli: give a checkout of the suite")
    head_root = Path(opts.head_tree).resolve() if opts.head_tree else HEAD_ROOT
    if opts.base_tree:  # a copy of the base's code made elsewhere (a checkout without .git, a CI cache)
        sha = f"tree {opts.base_tree}"
    else:
        sha = resolve(opts.base)
    head_sha = (f"tree {opts.head_tree}" if opts.head_tree else os.environ.get("VITCORE_GIT_SHA") or resolve("HEAD"))
    order = schedule(opts.processes)
    code = {"base": f"tree:{Path(opts.base_tree).name}" if opts.base_tree else None,  # a worktree: git knows
            "head": f"tree:{Path(opts.head_tree).name}" if opts.head_tree else os.environ.get("VITCORE_GIT_SHA")}
    # absolute: each bench process runs in its tree (cwd), and a relative --out would put its points
    # there (an H200 A/B of two trees kept none of them under --out)
    out = Path(opts.out).resolve()
    if out.exists() and any(out.iterdir()):
        raise VitcoreError(f"--out {str(out)!r} is not empty: `vitcore ab` starts fresh; give another folder")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ab.log"
    runs: dict[str, list[list[dict]]] = {"base": [], "head": []}
    print(f"[vitcore] ab: base {sha[:12]} vs head {head_sha[:12]} (working tree), {opts.processes} processes a side, "
          f"order {''.join('A' if s == 'base' else 'B' for s in order)}; bench output in {log}", file=sys.stderr)
    tree_cm = contextlib.nullcontext(Path(opts.base_tree).resolve()) if opts.base_tree else worktree(sha, out / "base-src")
    with tree_cm as base_tree:
        try:
            for i, side in enumerate(order, 1):
                t0 = time.monotonic()
                tree = base_tree if side == "base" else head_root
                rows = measure(bench_argv(opts, out / side / f"p{len(runs[side])}", side), tree, log, opts.timeout,
                               code[side])
                runs[side].append(rows)
                print(f"[{i}/{len(order)}] {side}: {len(rows)} points, {time.monotonic() - t0:.0f} s", file=sys.stderr)
        except KeyboardInterrupt:  # a CI step's time limit (SIGINT): what was measured is still judged
            if runs["base"] and runs["head"]:
                judge(opts, out, runs, (sha, head_sha, order, started), interrupted=True)
            raise
    gate = judge(opts, out, runs, (sha, head_sha, order, started))
    return 1 if gate.failed() else 0


def judge(opts: AbOptions, out: Path, runs: dict, run: tuple, *, interrupted: bool = False) -> budgets.GateResult:
    """Pool each side's processes, judge head against base by the one rule, write OUT/{base,head}.jsonl
    and OUT/ab.json and print the verdicts. An interrupted run's ab.json says so and how many
    processes each side had: with fewer than 5 a side its wall time is inconclusive, not passed."""
    sha, head_sha, order, started = run
    base, head = pooled(runs["base"]), pooled(runs["head"])
    for side, rows in (("base", base), ("head", head)):
        (out / f"{side}.jsonl").write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in rows))
    gate = budgets.compare_runs(head, base, opts.gate.tolerances, revisions=True)
    by_key = {points.key(p): p for p in base}
    for p in head:  # a changed plugin option is the change under test: named, then judged
        if points.key(p) in by_key and (diff := budgets.options_mismatch(p, by_key[points.key(p)])):
            print(f"[vitcore] ab: {points.key_text(p)}: head vs base {diff.split(';')[0]}", file=sys.stderr)
    for line in gate.improvements + gate.inconclusive:
        print(f"[vitcore] {'improved' if line in gate.improvements else 'inconclusive'}: {line}", file=sys.stderr)
    for line in gate.regressions:
        print(f"[vitcore] REGRESSED: {line}", file=sys.stderr)
    seconds = time.monotonic() - started
    summary = {"base": sha, "head": head_sha, "processes_a_side": opts.processes, "order": order,
               "seconds": round(seconds, 1), "regressions": gate.regressions, "improvements": gate.improvements,
               "inconclusive": gate.inconclusive,
               "verdicts": {" ".join(map(str, k)): [str(v) for v in vs] for k, vs in gate.verdicts.items()}}
    if interrupted:
        summary["interrupted"] = {side: len(runs[side]) for side in ("base", "head")}
    (out / "ab.json").write_text(json.dumps(summary, indent=2) + "\n")
    n = sum(len(vs) for vs in gate.verdicts.values())
    what = (f"interrupted after {len(runs['base'])} base and {len(runs['head'])} head processes"
            if interrupted else "done")
    print(f"[vitcore] ab {what} in {seconds / 60:.1f} min: {n} verdicts, {len(gate.regressions)} regressed, "
          f"{len(gate.improvements)} improved, {len(gate.inconclusive)} inconclusive; {out / 'ab.json'}", file=sys.stderr)
    return gate
