"""Reporting: derived fields and tables (`analysis`), the lower bound of peak memory (`memory`), each
entry eager beside compiled (`compiled`), each family at its best beside timm compiled with issue 29's
targets (`best`), host time per plugin beyond its reference (`host`), and rendering (`report`: Markdown, HTML, CSV, with the
cells and tables of `markdown`; `charts`: matplotlib, imported only when drawing).
"""

__all__ = ["analysis", "best", "charts", "compiled", "host", "markdown", "memory", "report"]
