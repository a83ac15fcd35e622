"""Measurement: the bench's plan and run loop (`bench`), timed windows and a point's measured
fields (`timing`), the GPU's own readings and the injected regressions (`profiling`), host time per step by package
and function from the --trace window (`host_profile`), the plain-PyTorch
reference and bare twins (`reference`), and the bench's console lines (`progress`).
"""

__all__ = ["bench", "host_profile", "profiling", "progress", "reference", "timing"]
