"""The learning-rate schedule of every fine-tune: a linear warm-up, then half a cosine to zero.

Its own module (torch only, no colossalai) so that mutation testing can reach the formula
(docs/mutation.md); vitcore.training.train attaches it to the optimizer that steps."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer, total: int, warmup: int):
    """Step t runs at base_lr * (t+1)/warmup during the warm-up, then at base_lr * (1 + cos(pi *
    (t - warmup) / (total - warmup))) / 2. A closed form of the step index, so a resume that
    restores `last_epoch` continues it exactly. Not colossalai's CosineAnnealingWarmupLR: on torch
    2.13 its cosine stage recurses from the wrong learning rate and overshoots the peak (measured:
    1.072x the base lr at the first step after a 2-step warm-up of 8 steps, 1.17x after 3 of 7,
    1.025x at step 1 without warm-up); tests/test_training_reference.py and
    tests/test_exact_values.py pin the formula."""
    decay = max(1, total - warmup)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / decay))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
