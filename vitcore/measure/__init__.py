"""Measurement: the bench's plan and run loop (`bench`), timed windows and a point's measured
fields (`timing`), the GPU's own readings and the injected regressions (`profiling`), the plain-PyTorch
reference and bare twins (`reference`), and the bench's console lines (`progress`).
"""

__all__ = ["bench", "profiling", "progress", "reference", "timing"]
