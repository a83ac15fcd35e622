"""Reporting: derived fields and tables (`analysis`), the lower bound of peak memory (`memory`), and
rendering (`report`: Markdown, HTML, CSV; `charts`: matplotlib, imported only when drawing).
"""

__all__ = ["analysis", "charts", "memory", "report"]
