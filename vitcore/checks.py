"""The pass/fail rules of the suite, kept out of the tests so that they can be shown to fail.

TOLERANCES is the one table of parity tolerances per precision (README repeats it):
a plugin's per-step losses and fixed-batch logits must match torch_ddp fp32 within it.
"""

from __future__ import annotations

from dataclasses import dataclass

# precision -> (rtol, atol, source)
TOLERANCES = {
    "fp32": (1e-4, 1e-5, "measured: hybrid_parallel fp32 matched torch_ddp to 1e-6 on CPU (tp1/tp2/pp2); "
                         "1e-4 leaves room for GPU reduction order and TF32-free fp32 kernels"),
    "fp16": (5e-2, 5e-4, "Colossal-AI's tests: ZeRO fp16 vs DDP, rtol 5e-2 atol 5e-4"),
    "bf16": (5e-2, 4e-3, "Colossal-AI's tests: ZeRO bf16 vs DDP atol 4e-3; rtol as fp16 (8-bit mantissa)"),
}

# model -> (minimum held-out accuracy, what it stands for)
CONVERGENCE = {
    ("vit-tiny", "embedded"): (0.55, "chance is 0.33; measured 0.66 after 10 epochs of 1,500 images"),
}


class CheckFailed(AssertionError):
    pass


@dataclass
class Comparison:
    what: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    n: int
    ok: bool

    def __str__(self):
        verdict = "within" if self.ok else "OUTSIDE"
        return (f"{self.what}: max |diff| {self.max_abs:.3g} (rel {self.max_rel:.3g}) over {self.n} values, "
                f"{verdict} atol {self.atol:g} + rtol {self.rtol:g}")


def compare(what: str, ref, got, precision: str) -> Comparison:
    """Element-wise |got - ref| <= atol + rtol * |ref| (torch.allclose's rule); reports the worst."""
    import torch

    rtol, atol, _ = TOLERANCES[precision]
    ref = torch.as_tensor(ref, dtype=torch.float64).flatten()
    got = torch.as_tensor(got, dtype=torch.float64).flatten()
    if ref.shape != got.shape or ref.numel() == 0:
        raise CheckFailed(f"{what}: cannot compare shapes {tuple(ref.shape)} and {tuple(got.shape)}")
    diff = (got - ref).abs()
    ok = bool(torch.isfinite(got).all() and (diff <= atol + rtol * ref.abs()).all())
    return Comparison(what, float(diff.max()), float((diff / ref.abs().clamp_min(1e-12)).max()),
                      rtol, atol, int(diff.numel()), ok)


def require(c: Comparison) -> Comparison:
    if not c.ok:
        raise CheckFailed(str(c))
    return c


def require_converged(history: dict, min_accuracy: float) -> float:
    if history["status"] != "ok":
        raise CheckFailed(f"{history['plugin']}: {history.get('error', history['status'])}")
    acc = history["epochs"][-1]["eval_accuracy"]
    if not acc >= min_accuracy:
        raise CheckFailed(f"{history['plugin']} {history['precision']}: held-out accuracy {acc:.3f} "
                          f"< required {min_accuracy:.2f} after {len(history['epochs'])} epochs")
    return acc
