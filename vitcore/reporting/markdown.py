"""The report's cell formats and Markdown tables, shared by every table (`report`, `compiled`)."""

from __future__ import annotations


def fmt(v, spec=".1f", missing="-"):
    return missing if v is None else format(v, spec)


def times(v) -> str:
    """A ratio as "1.23x", or "-"."""
    return f"{v:.2f}x" if v else "-"


def md_table(head: list[str], rows) -> list[str]:
    """Markdown table lines: header, rule, one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
           ["| " + " | ".join(map(str, cells)) + " |" for cells in rows]
