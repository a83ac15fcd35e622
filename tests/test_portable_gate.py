"""The portable gate on CPU (issue 27): the architecture key, the committed records held to their
architecture's invariants, fail-closed performance tests, the session summary, and the A/B mode's
planner and orchestration (with stand-in bench trees: the statistics are real, the GPU is not)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import budget_checks, xdist
from tests.support.options import SUITE, SuiteOptions
from vitcore import VitcoreError
from vitcore.cli import ab
from vitcore.gate import budget_files, budgets
from vitcore.spec import points
from vitcore.spec.env import arch_identity, device_identity

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = ROOT / "fixtures" / "budgets"
H100 = dict(gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_compute_capability="9.0", gpu_sm_count=132,
            torch="2.11.0+cu130", cuda="13.0", colossalai="0.5.0", transformers="4.51.3")
H200 = H100 | {"gpu_name": "NVIDIA H200"}
A100 = H100 | {"gpu_name": "NVIDIA A100-SXM4-80GB", "gpu_compute_capability": "8.0", "gpu_sm_count": 108}


def h100_point(key: str, **kw) -> dict:
    """The committed H100 entry `key` as a point measured on another device (`kw`)."""
    book = json.loads((BUDGETS / f"{device_identity(H100)}.json").read_text())
    plugin, precision, profile, model, ws, bs = key.split("|")
    entry = book["entries"][key]
    return {k: v for k, v in entry.items() if k not in ("source", "observed")} | {
        "plugin": plugin, "precision": precision, "profile": profile, "model": model, "world_size": int(ws[2:]),
        "batch_size": int(bs[2:]), "status": "ok", "date": "2026-12-02T00:00:00+00:00"} | H100 | kw


# --- the key ---------------------------------------------------------------------------------------
def test_h100_and_h200_share_an_architecture_key_and_an_a100_does_not():
    assert arch_identity(H100) == arch_identity(H200) == "sm90-132sms-torch2.11.0-cuda13.0-colossalai0.5.0-transformers4.51.3"
    assert device_identity(H100) != device_identity(H200)
    assert arch_identity(A100) != arch_identity(H100)
    assert arch_identity(H100 | {"colossalai": "0.5.1"}) != arch_identity(H100)  # software is in the key
    assert arch_identity(H100 | {"gpu_sm_count": None}) is None  # a point without the fields shares nothing
    assert arch_identity({"gpu_name": None, "torch": "2.13.0"}) is None  # a CPU


# --- the committed records ---------------------------------------------------------------------------
def committed_books() -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(BUDGETS.glob("*.json"))]


def test_every_committed_budget_file_names_its_architecture():
    books = committed_books()
    assert books, f"no budget file in {BUDGETS}"
    for name, book in books:
        assert book["arch"] == arch_identity(book["device"]), name
        assert book["identity"] == name == device_identity(book["device"])


def test_committed_records_of_one_architecture_agree_on_every_invariant():
    """Each pair of committed files with one architecture key: every entry both hold judged against
    the other on the portable groups, no failing verdict (the H100 and H200 records)."""
    books = committed_books()
    pairs = [(a, b) for i, a in enumerate(books) for b in books[i + 1:] if a[1]["arch"] == b[1]["arch"]]
    compared = 0
    for (na, a), (nb, b) in pairs:
        for key in sorted(set(a["entries"]) & set(b["entries"])):
            p = a["entries"][key] | a["device"] | {"status": "ok", **_identity(key)}
            bad = [str(v) for v in budgets.judge(p, b["entries"][key], groups=PORTABLE) if budgets.fails(v)]
            assert not bad, f"{na} vs {nb}: {bad}"
            compared += 1
    assert compared == sum(len(set(a[1]["entries"]) & set(b[1]["entries"])) for a, b in pairs)


PORTABLE = [g for g in points.gate_groups() if points.portable(g)]


def _identity(key: str) -> dict:
    plugin, precision, profile, model, ws, bs = key.split("|")[:6]
    return dict(plugin=plugin, precision=precision, profile=profile, model=model, world_size=int(ws[2:]),
                batch_size=int(bs[2:]))


def test_portable_groups_are_launches_and_allocated_memory_only():
    assert sorted(PORTABLE) == ["launches", "memory"]
    assert not points.portable("device_time") and not points.portable("throughput")
    assert all(f.gate is None for f in points.FIELDS if "reserved" in f.name)  # never gated


# --- a new GPU of a known architecture ------------------------------------------------------------------
KEY = "torch_ddp_fp16|fp16|fast|vit-base|ws1|bs32"


def test_a_new_gpu_is_judged_on_the_invariants_from_its_first_run_and_fails_closed_on_the_rest(tmp_path):
    for name, book in committed_books():
        (tmp_path / f"{name}.json").write_text(json.dumps(book))
    (tmp_path / f"{device_identity(H200)}.json").unlink(missing_ok=True)  # the H200 as it first met the suite
    p = h100_point(KEY, **H200)
    verdicts, missing = budget_checks.judge_point(tmp_path, p, ("launches", "memory", "device_time"))
    assert {v.group for v, _ in verdicts} == {"launches", "memory"}
    assert {dev for _, dev in verdicts} == {device_identity(H100)}
    assert all(v.outcome == "pass" for v, _ in verdicts)
    (why,) = missing
    assert f"no budget file for device '{device_identity(H200)}'" in why and "--update-budgets" in why
    # the same point with one more launch per step fails, naming the H100's record
    verdicts, _ = budget_checks.judge_point(tmp_path, p | {"launches_per_step": p["launches_per_step"] + 1}, ("launches",))
    assert [budgets.fails(v) for v, _ in verdicts] == [True]
    # another architecture has nothing to be judged against
    verdicts, missing = budget_checks.judge_point(tmp_path, p | A100, ("launches", "device_time"))
    assert not verdicts and len(missing) == 2


class FakeConfig:
    """A pytest config holding the suite's options (tests/support/options.py), as configure leaves it."""

    def __init__(self, **opts):
        base = {"--plugin": None, "--model": None, "--dataset": "auto", "--budgets": "fixtures/budgets",
                "--update-budgets": False, "--allow-missing-budgets": False, "--allow-invariant-change": False,
                "--perf-batch-sizes": "32,128", "--perf-steps": 5, "--perf-min-window": 0.3, "--perf-repeats": 3,
                "--perf-processes": None, "--perf-inject-device-pct": 0.0, "--world-sizes": "2,4,8",
                "--results-out": None, "--gpu-workers": 4, "verbose": 0, "--compile": False}
        self.opts = base | opts
        self.stash = {SUITE: SuiteOptions.from_config(self)}

    def getoption(self, name):
        return self.opts[name]


def _check(monkeypatch, folder, point, **opts):
    monkeypatch.setattr(budget_checks, "performance_points", lambda cfgs, request, results: ([point], []))
    from conftest import BudgetChecks

    checks = BudgetChecks()
    request = SimpleNamespace(config=FakeConfig(**{"--budgets": str(folder)} | opts))
    budget_checks.check_budgets([], request, None, checks, ("launches", "memory", "device_time"), reported=("throughput",))
    return checks


def test_a_performance_test_without_its_budget_fails_naming_the_device_and_the_record_command(tmp_path, monkeypatch):
    p = h100_point(KEY, **H200)
    with pytest.raises(pytest.fail.Exception) as e:
        _check(monkeypatch, tmp_path, p)
    assert device_identity(H200) in str(e.value) and "pytest -m gpu -k performance --update-budgets" in str(e.value)
    assert str(e.value).count("pytest -m gpu -k performance --update-budgets") == 1, "the record command once, however many groups lack a budget"
    with pytest.raises(pytest.skip.Exception, match="--allow-missing-budgets: no budget file"):
        _check(monkeypatch, tmp_path, p, **{"--allow-missing-budgets": True})


def test_the_summary_counts_points_judged_on_device_time_on_invariants_only_and_not_at_all(tmp_path):
    from conftest import BudgetChecks

    for name, book in committed_books():
        if name == device_identity(H100):
            (tmp_path / f"{name}.json").write_text(json.dumps(book))
    groups = ("launches", "memory", "device_time")
    checks = BudgetChecks()
    for p in (h100_point(KEY), h100_point("torch_ddp_fp16|fp16|fast|vit-base|ws1|bs128", **H200),
              h100_point("torch_fsdp|bf16|fast|vit-base|ws1|bs32", **A100)):
        checks.record(p, groups, *budget_checks.judge_point(tmp_path, p, groups))
    lines = checks.summary()
    assert lines[0] == ("3 points: 1 judged on device time and invariants, 1 on invariants only (no budget of this "
                        "device), 1 not at all; 0 failing verdicts")
    assert "invariants only: torch_ddp_fp16|fp16|fast|vit-base|ws1|bs128 (no device_time)" in lines
    assert "not judged: torch_fsdp|bf16|fast|vit-base|ws1|bs32" in lines
    checks.violations.append("x")
    checks.wall.append("w")
    # wall time not judged: every point's reason in one line, the record command once (not once a point);
    # the H200's own file, its gemini entries taken out (a device file that lacks an entry)
    for name, book in committed_books():
        if name == device_identity(H200):
            book["entries"] = {k: e for k, e in book["entries"].items() if not k.startswith("gemini|")}
            (tmp_path / f"{name}.json").write_text(json.dumps(book))
    for p in (h100_point("gemini|bf16|fast|vit-base|ws1|bs32", **H200), h100_point("gemini|bf16|fast|vit-base|ws1|bs128", **H200)):
        checks.report(*budget_checks.judge_point(tmp_path, p, ("throughput",)))
    unjudged = [ln for ln in checks.summary() if "not judged: no budget" in ln]
    assert len(unjudged) == 1 and unjudged[0].count("pytest -m gpu -k performance --update-budgets") == 1, unjudged
    assert "'gemini|bf16|fast|vit-base|ws1|bs32', 'gemini|bf16|fast|vit-base|ws1|bs128' for device" in unjudged[0]
    # through pytest-xdist's channel: a worker's checks, as JSON, into the controller's summary
    from conftest import BUDGET_CHECKS

    worker = SimpleNamespace(workeroutput={}, stash={BUDGET_CHECKS: checks})
    xdist.xdist_collect(worker)
    controller = SimpleNamespace(stash={BUDGET_CHECKS: BudgetChecks()})
    xdist.xdist_merge(SimpleNamespace(workeroutput=worker.workeroutput, config=controller))
    merged = controller.stash[BUDGET_CHECKS].summary()
    assert merged == checks.summary() and merged[0].endswith("1 failing verdicts") and "FAILED x" in merged


def test_recording_an_invariant_that_contradicts_the_architecture_fails_naming_both(tmp_path):
    budget_files.update(tmp_path, h100_point(KEY))
    other = h100_point(KEY, **H200) | {"steady_mem_allocated_gib": h100_point(KEY)["steady_mem_allocated_gib"] * 1.02}
    with pytest.raises(budget_files.InvariantConflict) as e:
        budget_files.update(tmp_path, other)
    assert device_identity(H200) in str(e.value) and device_identity(H100) in str(e.value)
    assert not (tmp_path / f"{device_identity(H200)}.json").exists()  # nothing half-written
    _, _, review = budget_files.update(tmp_path, other, allow_invariant_change=True)
    assert any(line.startswith("allowed invariant change") for line in review)


def test_reserved_memory_states_never_fail_and_allocated_changes_do(tmp_path):
    """The H200's false alarms: reserved 5.756 vs 5.438 GiB (+5.9%) on unchanged code, allocated equal."""
    base = h100_point(KEY) | {"steady_mem_reserved_gib": 5.438}
    budget_files.update(tmp_path, base)
    entry = budget_files.lookup(budget_files.load(tmp_path, base), base)
    assert not budgets.compare(base | {"steady_mem_reserved_gib": 5.756, "peak_mem_reserved_gib": 9.9}, entry)
    grown = base | {"steady_mem_allocated_gib": base["steady_mem_allocated_gib"] * 1.01}
    assert [v.group for v in budgets.compare(grown, entry)] == ["memory"]


# --- the A/B mode ------------------------------------------------------------------------------------
@given(st.integers(1, 40))
def test_ab_schedule_interleaves_and_cancels_a_linear_drift(n):
    order = ab.schedule(n)
    assert order.count("base") == order.count("head") == n
    assert all(a != b for a, b in zip(order[::2], order[1::2], strict=True))  # every pair holds both
    pos = {s: sum(i for i, x in enumerate(order) if x == s) for s in ("base", "head")}
    assert abs(pos["base"] - pos["head"]) <= 1  # a drift linear in time adds (almost) the same to both


def test_ab_schedule_refuses_zero():
    with pytest.raises(VitcoreError, match="--processes 0"):
        ab.schedule(0)


FAKE_CLI = '''
"""A stand-in `vitcore bench --json`: one point whose windows scatter around SPEED images/s."""
import json, os, random, sys
speed = {speed}
rng = random.Random()
win = [speed * (1 + rng.uniform(-0.02, 0.02)) for _ in range(3)]
win.sort()
p = dict(plugin="torch_ddp", family="torch_ddp", precision="fp32", profile="fast", variant="", model="vit-tiny",
         world_size=1, batch_size=4, status="ok", images_per_s=win[1], images_per_s_windows=win, spread=0.04,
         images_per_s_process_medians=[win[1]], processes=1, step_time_s=4 / win[1], mfu=None, repeats=3,
         gpu_name=None, gpu_count=0, torch="2.13.0", cuda=None, device="cpu", launches_per_step={launches},
         date="2026-12-02", git_sha=os.environ.get("VITCORE_GIT_SHA", "git"), dataset="synthetic-tensors",
         weights="random-init")
print(json.dumps(p))
out = sys.argv[sys.argv.index("--out") + 1]  # as bench does: the process's points under its --out
os.makedirs(out)
with open(os.path.join(out, "points.jsonl"), "w") as f:
    print(json.dumps(p), file=f)
'''


def fake_tree(root: Path, speed: float, launches: float = 100.0) -> Path:
    (root / "vitcore").mkdir(parents=True)
    (root / "vitcore" / "__init__.py").write_text("")
    (root / "vitcore" / "cli.py").write_text(textwrap.dedent(FAKE_CLI.format(speed=speed, launches=launches)))
    return root


def ab_opts(tmp_path, base, head, **kw):
    from vitcore.cli import options, typed

    argv = ["ab", "--base-tree", str(base), "--head-tree", str(head), "--plugins", "torch_ddp", "--device", "cpu",
            "--model", "vit-tiny", "--batch-sizes", "4", "--out", str(tmp_path / "ab")]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return typed.AbOptions.from_args(options.build_parser().parse_args(argv))


@pytest.mark.parametrize("head_speed,launches,rc,verdict", [
    (900.0, 100.0, 1, "regressed"),  # 10% slower: decided with 5 processes a side
    (1000.0, 100.0, 0, "pass"),      # the same code
    (1100.0, 100.0, 0, "improved"),  # 10% faster
    (1000.0, 99.0, 0, "fewer"),      # one launch fewer: the base is a revision, not a stale budget
    (1000.0, 101.0, 1, "more"),      # one launch more: regressed
])
def test_ab_runs_both_trees_interleaved_and_judges_head_against_base(tmp_path, head_speed, launches, rc, verdict):
    base = fake_tree(tmp_path / "base", 1000.0)
    head = fake_tree(tmp_path / "head", head_speed, launches)
    assert ab.run(ab_opts(tmp_path, base, head)) == rc
    out = json.loads((tmp_path / "ab" / "ab.json").read_text())
    assert out["order"] == ab.schedule(5)
    assert len((tmp_path / "ab" / "head.jsonl").read_text().splitlines()) == 1
    (lines,) = out["verdicts"].values()
    text = " ".join(lines)
    if verdict == "regressed":
        assert "images/s" in out["regressions"][0] and "99% interval" in out["regressions"][0]
    elif verdict == "pass":
        assert not out["regressions"] and not out["improvements"]
    elif verdict == "improved":
        assert out["improvements"] and not out["regressions"]
    elif verdict == "fewer":
        assert "launches/step 99 vs budget 100" in text and not out["regressions"]
        assert any("launches/step 99" in line for line in out["improvements"])
    else:
        assert "launches/step 101 vs budget 100" in text and out["regressions"]


def test_two_revisions_with_other_plugin_options_are_judged_not_refused():
    """An A/B of a changed option (the H200's hybrid_parallel flash attention off): judged, while a budget
    or a --compare baseline recorded with other options still fails closed as 'settings'."""
    from vitcore.gate import budgets

    base = dict(plugin="hybrid_parallel", precision="bf16", profile="fast", variant="", model="vit-base", world_size=1,
                batch_size=128, status="ok", device="NVIDIA H200", torch="2.11.0", cuda="13.0", gpu_name="NVIDIA H200",
                gpu_count=1, launches_per_step=1863.0,
                images_per_s_process_medians=[2962.3, 2951.2, 2943.6, 2948.6, 2968.6], images_per_s=2951.2,
                plugin_options={"enable_flash_attention": True})
    head = base | dict(launches_per_step=1947.0, images_per_s_process_medians=[2683.7, 2680.9, 2668.2, 2684.9, 2682.6],
                       images_per_s=2682.6, plugin_options={"enable_flash_attention": False})
    ab = budgets.compare_runs([head], [base], revisions=True)
    assert not any("plugin options" in line for line in ab.regressions)
    assert any("images/s" in line and "regressed" in line for line in ab.regressions)
    assert any("launches/step 1947" in line for line in ab.regressions)
    back = budgets.compare_runs([base], [head], revisions=True)  # the same change, the faster way
    assert not back.regressions and any("launches/step 1863" in line for line in back.improvements)
    assert ["plugin options differ" in line for line in budgets.compare_runs([head], [base]).regressions] == [True]


def test_ab_keeps_every_process_points_under_a_relative_out_while_each_runs_in_its_own_tree(tmp_path, monkeypatch):
    base = fake_tree(tmp_path / "base", 1000.0)
    head = fake_tree(tmp_path / "head", 1000.0)
    monkeypatch.chdir(tmp_path)
    opts = dataclasses.replace(ab_opts(tmp_path, base, head), out="ab")  # relative, as the documented CI job gives it
    ab.run(opts)
    for side in ("base", "head"):
        assert len(list((tmp_path / "ab" / side).glob("p*/points.jsonl"))) == 5, side
        assert not (tmp_path / side / "ab").exists(), "a process's points landed in its tree"
        # the code each side ran, named by its tree (git could not tell: the trees have no .git)
        (point,) = [json.loads(ln) for ln in (tmp_path / "ab" / f"{side}.jsonl").read_text().splitlines()]
        assert point["git_sha"] == f"tree:{side}"


def test_an_interrupted_ab_still_judges_what_it_measured_and_says_so(tmp_path, monkeypatch):
    """A CI step's time limit (SIGINT) after 4 of 10 processes: ab.json holds the verdicts of those,
    marked interrupted; with 2 a side the wall time is inconclusive, never a pass; the interrupt goes on."""
    base = fake_tree(tmp_path / "base", 1000.0)
    head = fake_tree(tmp_path / "head", 800.0)
    real, calls = ab.measure, []

    def measure(*a, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ab, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        ab.run(ab_opts(tmp_path, base, head))
    out = json.loads((tmp_path / "ab" / "ab.json").read_text())
    assert out["interrupted"] == {"base": 2, "head": 2}
    assert out["inconclusive"] and "images/s" in out["inconclusive"][0] and not out["regressions"]


def test_ab_bad_input_is_one_line_before_anything_runs(tmp_path):
    head = fake_tree(tmp_path / "head", 1000.0)
    cases = [({"processes": 3}, "--processes 3: wall time is decided at 99% only with 5"),
             ({"batch_sizes": "0"}, "--batch-sizes"),
             ({"steps": 0}, "--steps 0")]
    for kw, needle in cases:
        with pytest.raises(VitcoreError, match=needle.replace("(", r"\(")):
            ab.run(ab_opts(tmp_path, head, head, **kw))
        assert not (tmp_path / "ab").exists()
    with pytest.raises(VitcoreError, match="holds no vitcore/cli"):
        ab.run(ab_opts(tmp_path, tmp_path, head))


def test_ab_worktree_of_a_real_revision_is_made_and_removed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    (repo / "f").write_text("1")
    subprocess.run(git + ["add", "f"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "one"], cwd=repo, check=True)
    sha = ab.resolve("HEAD", repo)
    with ab.worktree(sha, tmp_path / "wt", repo) as tree:
        assert (tree / "f").read_text() == "1"
    assert not (tmp_path / "wt").exists()
    with pytest.raises(VitcoreError, match="is not a commit"):
        ab.resolve("no-such-rev", repo)


def test_ab_through_the_cli_names_a_bad_revision_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "vitcore.cli", "ab", "--base", "no-such-rev", "--plugins", "torch_ddp",
                        "--device", "cpu", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("vitcore: error:")]
    assert p.returncode == 2 and lines == ["vitcore: error: --base 'no-such-rev' is not a commit of "
                                           f"{ROOT} (try a sha, a branch or HEAD~1; `git log --oneline` lists them)"]
