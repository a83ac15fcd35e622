"""The front page stays a front page, and every link in the documentation leads somewhere real.

Checks README.md, docs/**/*.md and the reports index: a relative link must name a file or folder
that exists in the repository (an anchor after '#' is ignored), and must not leave the repository
(the rule: no links to ../shared/... or other places a clone does not have).
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT_BYTES = 10 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...

DOCUMENTS = sorted([ROOT / "README.md", ROOT / "reports" / "README.md", *(ROOT / "docs").rglob("*.md")])


def relative_links(text: str) -> list[str]:
    """Link targets of a Markdown text that point into the file tree (not URLs, not pure anchors)."""
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def broken_links(base: Path, text: str) -> list[str]:
    """The relative links of `text`, read from folder `base`, that miss or leave the repository."""
    broken = []
    for target in relative_links(text):
        path = (base / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not path.exists():
            broken.append(f"{target} (no such file)")
    return broken


def test_readme_is_a_front_page():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes; the limit is {README_LIMIT_BYTES}: move detail to docs/"


def test_the_documents_are_found():
    names = {d.relative_to(ROOT).as_posix() for d in DOCUMENTS}
    assert {"README.md", "docs/gate.md", "docs/architecture.md", "reports/README.md"} <= names


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc):
    assert broken_links(doc.parent, doc.read_text(encoding="utf-8")) == [], f"{doc.relative_to(ROOT)}: broken links"


def test_link_check_catches_missing_and_outside_targets():
    """The check itself: a missing file and a link out of the repository are reported; URLs and
    anchors are not links into the tree."""
    text = ("[a](architecture.md) [b](nope.md#x) [c](../../shared/notes/study.md) [d](https://example.org) "
            "[e](#top) ![f](results/)")
    assert relative_links(text) == ["architecture.md", "nope.md#x", "../../shared/notes/study.md", "results/"]
    assert broken_links(ROOT / "docs", text) == ["nope.md#x (no such file)",
                                                 "../../shared/notes/study.md (outside the repository)"]


# --- every documented `vitcore` command line parses ------------------------------------------------
# Each line of a README.md or docs/*.md code block that runs `vitcore ...`, `python -m vitcore ...`
# or `python3 -m vitcore.cli ...` (also inside `bash scripts/device_run.sh ...` and `bash -c '...'`,
# and a yaml block's `run:` steps) is parsed by the CLI's own parser as written: an unknown
# subcommand or flag, or a bad value type, is argparse's exit 2. Parsing in this process takes
# milliseconds; `--help` appended would not do (argparse prints the help before it rejects an
# unknown flag). A few run for real through `python -m vitcore`, below.
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```", re.M | re.S)
DEFINED = re.compile(r'`(\w+)="([^"`]*)"`')  # `T="--steps 10 --repeats 3 --warmup 5"` in the prose
PLACEHOLDER = "..."  # `vitcore bench ... --resume`: any bench options
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
SHELL_DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line, command) of every code block line, continuation lines joined; a yaml block's `run:`
    values (a CI job's steps)."""
    out = []
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start(2)) + 1
        if m.group(1) in ("yaml", "yml"):
            import yaml

            out += [(first, run) for run in _runs(yaml.safe_load(m.group(2)))]
            continue
        pending, start = "", first
        for i, line in enumerate(m.group(2).splitlines()):
            if not pending:
                start = first + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending = ""
    return out


def _runs(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "run" and isinstance(v, str)] + \
            [r for k, v in node.items() if k != "run" for r in _runs(v)]
    return [r for v in node for r in _runs(v)] if isinstance(node, list) else []


def _expand(command: str, defined: dict[str, str]) -> str:
    """Shell variables as the doc defines them (`T="..."`), any other as a plain word."""
    def value(m):
        return defined.get(m.group(1), "1")

    command = re.sub(r"'\"\$\{?(\w+)\}?\"'", value, command)  # '"$T"' spliced into a bash -c script
    return re.sub(r"\"?\$\{?(\w+)\}?\"?", value, command)


def vitcore_argvs(command: str, defined: dict[str, str] | None = None) -> list[list[str]]:
    """The argument lists of every vitcore invocation in one shell command line."""
    import shlex

    lexer = shlex.shlex(_expand(command, defined or {}), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    tokens, found, segment = list(lexer), [], []
    for tok in [*tokens, ";"]:
        if tok not in SEPARATORS:
            segment.append(tok)
            continue
        for i, t in enumerate(segment):
            if " " in t and "vitcore" in t:  # a script given to bash -c
                found += vitcore_argvs(t, defined)
            after = None
            if t == "vitcore" and (i == 0 or segment[i - 1] in ("do", "then", "time", "exec")):
                after = i + 1
            elif t in ("python", "python3") and segment[i + 1:i + 3] in (["-m", "vitcore"], ["-m", "vitcore.cli"]):
                after = i + 3
            if after is not None:
                found.append([a for a in segment[after:] if a != PLACEHOLDER])
        segment = []
    return found


def doc_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in SHELL_DOCS:
        text = doc.read_text(encoding="utf-8")
        defined = dict(DEFINED.findall(text))
        for line, command in shell_commands(text):
            out += [(f"{doc.relative_to(ROOT).as_posix()}:{line}", argv) for argv in vitcore_argvs(command, defined)]
    return out


def rejected(argv: list[str]) -> str | None:
    """argparse's message where the CLI's parser rejects `argv`, or the preflight's where a plugin
    it names is not in the registry; None where it parses."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from vitcore import VitcoreError
    from vitcore.cli import options
    from vitcore.spec import plugins

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            args = options.build_parser().parse_args(argv)
        except SystemExit as e:
            return None if e.code == 0 else f"exit {e.code}: {err.getvalue().strip()}"
    try:
        plugins.select(getattr(args, "plugins", None) or [getattr(args, "plugin", None) or "torch_ddp"])
    except VitcoreError as e:
        return str(e)
    return None


DOC_COMMANDS = doc_commands()


@pytest.mark.parametrize("where,argv", DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_every_documented_vitcore_command_parses(where, argv):
    assert rejected(argv) is None, f"{where}: `vitcore {' '.join(argv)}` is rejected: {rejected(argv)}"


def test_the_documented_commands_are_found():
    """The extraction itself: every subcommand the docs show, the device-run and yaml forms."""
    assert {argv[0] for _, argv in DOC_COMMANDS} >= {"train", "bench", "report"}
    assert len(DOC_COMMANDS) >= 15
    assert vitcore_argvs("bash scripts/device_run.sh bash -c 'for o in a b; do python3 -m vitcore.cli bench "
                         "--steps \"$T\" --option x=$o; done'", {"T": "3"}) == [["bench", "--steps", "3", "--option", "x=1"]]
    assert vitcore_argvs("pip install x && export PYTHONPATH=$PWD && vitcore env  # note") == [["env"]]
    assert shell_commands("```yaml\njob:\n  steps:\n    - run: >\n        vitcore bench\n        --resume\n```\n") == \
        [(2, "vitcore bench --resume\n")]


def test_the_parse_check_rejects_an_unknown_flag_or_subcommand():
    assert "unrecognized arguments: --no-such-flag" in rejected(["bench", "--no-such-flag"])
    assert "invalid choice" in rejected(["benchmark"])
    assert "is not a comma-separated list of integers" in rejected(["bench", "--batch-sizes", "8,x"])
    assert "unknown plugin 'nope'" in rejected(["bench", "--plugins", "gemini,nope"])
    assert rejected(["bench", "--batch-sizes", "8,32", "--resume"]) is None


def test_documented_subcommands_run_through_python_m_vitcore():
    """`python -m vitcore` is an entry point (the offline setup's), not only `python -m vitcore.cli`:
    --version as written, and each documented subcommand's --help."""
    import subprocess
    import sys

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "vitcore", *argv], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("vitcore "), version.stderr[-2000:]
    for cmd in sorted({argv[0] for _, argv in DOC_COMMANDS if not argv[0].startswith("-")}):  # not --version
        p = run(cmd, "--help")
        assert p.returncode == 0 and f"usage: vitcore {cmd}" in p.stdout, f"{cmd}: {p.stderr[-2000:]}"
