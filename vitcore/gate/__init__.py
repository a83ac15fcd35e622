"""The gate: the one regression rule (`budgets`: every gated metric of a point gets pass / regressed
/ improved / inconclusive), the sample comparison behind wall time (`stats`), and the per-device
budget files with the portable invariants shared by one architecture (`budget_files`).
Reads `vitcore.spec` and writes through `vitcore.files`; measures nothing.
"""

__all__ = ["budget_files", "budgets", "stats"]
