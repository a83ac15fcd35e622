"""The package's layout holds the architecture (issue 28): subpackages by job, each importing only
the groups below it; no import cycle between modules; every module under 400 lines; `import
vitcore.cli` loads neither torch nor matplotlib; the suite imports the subpackages, not the old flat
names (which `vitcore.__getattr__` keeps for users)."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vitcore

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vitcore"
# top to bottom: a group may import the groups after it, never one before it (docs/architecture.md)
ORDER = ["cli", "reporting", "gate", "measure", "training", "processes", "store", "spec", "inputs", "<root>"]
MAX_LINES = 400


def group_of(module: str) -> str:
    parts = module.split(".")  # vitcore.cli and vitcore.cli.commands: cli; vitcore.files, vitcore: the root
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "<root>"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every vitcore module `path` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vitcore":
            for a in node.names:  # `from vitcore.spec import points` names a module; `from x import f` does not
                sub = f"{node.module}.{a.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "vitcore"}
    return out


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in sorted(root.rglob("*.py"))}


def upward_edges(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        if mod.endswith("__main__"):  # `python -m vitcore`: the entry point, above every group
            continue
        for dep in deps:
            if dep == "vitcore" or dep.endswith("__main__"):
                continue
            a, b = group_of(mod), group_of(dep)
            if a != b and ORDER.index(b) <= ORDER.index(a):
                bad.append(f"{mod} ({a}) imports {dep} ({b})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle between modules, found by depth-first search (a package's __init__ importing
    its own module, `vitcore.cli` -> `vitcore.cli.commands`, is not one)."""
    found, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if d not in g or m.startswith(d + ".") or d.startswith(m + "."):
                continue
            if state.get(d) == "open":
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    return found


def test_every_group_is_in_the_order_and_every_module_in_a_group():
    groups = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert groups == set(ORDER) - {"<root>"}
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "files.py"], "a module outside the subpackages: give it a group"


def test_groups_import_only_the_groups_below_them():
    assert upward_edges(graph()) == []


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """Injected: a spec module importing the gate, and two training modules importing each other."""
    pkg = tmp_path / "vitcore"
    for g in ("spec", "gate", "training"):
        (pkg / g).mkdir(parents=True)
        (pkg / g / "__init__.py").write_text("")
    (pkg / "spec" / "points.py").write_text("from vitcore.gate import budgets\n")
    (pkg / "gate" / "budgets.py").write_text("")
    (pkg / "training" / "train.py").write_text("def f():\n    from vitcore.training.checkpoint import x\n")
    (pkg / "training" / "checkpoint.py").write_text("from vitcore.training import train\n")
    global ROOT, PACKAGE
    saved = ROOT, PACKAGE
    ROOT, PACKAGE = tmp_path, pkg
    try:
        g = graph(pkg)
    finally:
        ROOT, PACKAGE = saved
    assert upward_edges(g) == ["vitcore.spec.points (spec) imports vitcore.gate.budgets (gate)"]
    assert cycles(g) == [["vitcore.training.checkpoint", "vitcore.training.train", "vitcore.training.checkpoint"]]


def test_every_module_is_under_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert long == {}, f"modules of {MAX_LINES} lines or more: split them by job"


def test_every_subpackage_says_what_it_is_and_exports_its_modules():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        mod = importlib.import_module(module_name(init))
        assert mod.__doc__ and len(mod.__doc__.split()) >= 15, f"{mod.__name__}: a one-paragraph docstring"
        modules = sorted(p.stem for p in init.parent.glob("*.py") if not p.stem.startswith("_"))
        assert sorted(set(mod.__all__) - {"main"}) == modules, mod.__name__


def test_import_vitcore_cli_loads_neither_torch_nor_matplotlib():
    code = ("import sys, vitcore.cli, vitcore.cli.options, vitcore.cli.preflight; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'colossalai', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_suite_imports_the_subpackages_not_the_old_flat_names():
    """`from vitcore import plugins` works for users (vitcore.__getattr__); the suite's own code and tests
    name the subpackage, so that the tree shows what depends on what."""
    old = set(vitcore._MOVED) | set(vitcore._RENAMED) | {"console"}
    offenders = []
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "conftest.py", *(ROOT / "scripts").rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "vitcore":
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names if a.name in old]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vitcore.") and \
                    node.module.split(".")[1] in old:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert offenders == []


@pytest.mark.parametrize("name", sorted(vitcore._MOVED))
def test_an_old_flat_name_still_imports_the_moved_module(name):
    moved = importlib.import_module(f"vitcore.{vitcore._MOVED[name]}.{name}")
    assert getattr(vitcore, name) is moved
    namespace = {}
    exec(f"from vitcore import {name}", namespace)
    assert namespace[name] is moved


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        vitcore.nonesuch  # noqa: B018


def test_test_modules_import_the_support_package_not_each_other():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith("tests.test_")]
    # and in code run by subprocesses (strings): the support modules by their package
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                offenders += [f"{path.name}:{node.lineno} {m}" for m in
                              re.findall(r"from tests import \w+|import tests\.(?!support)\w+", node.value)]
    assert offenders == [], "shared test code belongs in tests/support"


def _part_of_imports(line: str) -> bool:
    """A line of an import statement (a parenthesized one's names and closing parenthesis too)."""
    text = line.strip()
    return text.startswith(("from ", "import ")) or text == ")" or (text.endswith(",") and not text.startswith("#"))


def bare_function_imports(path: Path) -> list[str]:
    """Imports inside a function with no reason given: a comment on the import, or above it (one
    comment may cover a run of consecutive imports)."""
    lines = path.read_text().split("\n")
    out = []
    for f in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(f):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if any("#" in s for s in lines[node.lineno - 1:node.end_lineno]):
                continue
            i = node.lineno - 2
            while i >= 0 and _part_of_imports(lines[i]):
                i -= 1
            if i < 0 or not lines[i].strip().startswith("#"):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_every_import_inside_a_function_says_why_it_is_there():
    bare = [b for p in sorted(PACKAGE.rglob("*.py")) for b in bare_function_imports(p)]
    assert bare == [], "move the import to the top, or say in a comment why it waits (what it costs)"


def test_the_reason_check_sees_a_bare_import(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    # json: why\n    import json\n    import os\n\n    import re\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert bare_function_imports(tmp_path / "m.py") == ["m.py:6"]
    finally:
        ROOT = saved


def _reads_a_namespace(fn: ast.FunctionDef) -> bool:
    """A parameter called args / opts whose attributes the function reads (an argparse namespace;
    launch.spawn's `args` tuple is not one)."""
    names = {a.arg for a in fn.args.args} & {"args", "opts"}
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in names
               for n in ast.walk(fn))


def test_the_suite_options_are_read_in_one_place():
    """`config.getoption("--...")` of a suite option only in tests/support/options.py (the typed object)
    and the pre-configure hook that picks xdist workers; no function outside the command line takes
    the argparse namespace, and no `getattr(args, ...)` guesses at one."""
    readers = []
    for path in [*(ROOT / "tests").rglob("*.py"), ROOT / "conftest.py"]:
        if path.name in ("options.py", "test_layout.py"):
            continue
        readers += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r'getoption\("--(?!gpu-workers)[\w-]+"\)',
                                                                          path.read_text())]
    assert readers == []
    guesses = [f"{p.relative_to(ROOT)}" for p in PACKAGE.rglob("*.py") if re.search(r"getattr\((args|opts),", p.read_text())]
    assert guesses == []
    outside = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name}" for p in PACKAGE.rglob("*.py") if "cli" not in p.parts
               for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef) and _reads_a_namespace(n)]
    assert outside == [], "a function outside vitcore/cli takes the parsed command line"
