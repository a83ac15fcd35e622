"""The result files: append-only `points.jsonl` (crash-safe appends, torn lines named), what a
resumed run keeps and measures again, and the lock that keeps two runs out of one `--out` folder.
"""

__all__ = ["results"]
