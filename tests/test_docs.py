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
