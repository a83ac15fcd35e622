"""Reporting: derived fields and tables (`analysis`), the lower bound of peak memory (`memory`), each
entry eager beside compiled (`compiled`), host time per plugin beyond its reference (`host`), and rendering (`report`: Markdown, HTML, CSV, with the
cells and tables of `markdown`; `charts`: matplotlib, imported only when drawing).
"""

__all__ = ["analysis", "charts", "compiled", "host", "markdown", "memory", "report"]
