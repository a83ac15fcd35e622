"""The suite's training loop against an independent hand-written one (vitcore.training.plain).

Parity compares each plugin with torch_ddp through the same train_step, so a bug in the shared
loop cancels out there; here torch_ddp fp32 must reproduce a plain-PyTorch loop that shares no code
with it. The comparison is exact: on one CPU process both run the same float operations in the
same order (DDP over one gloo rank averages gradients over one rank, which changes no bit), so any
difference is a difference of semantics (schedule, data order, labels, evaluation split).
"""

import math

import pytest

from tests.support.runs import run
from vitcore.inputs import data
from vitcore.spec.config import RunConfig
from vitcore.training import plain, train
from vitcore.training.checkpoint import innermost_optimizer

# Two epochs so that the epoch boundary (a new shuffle) and the schedule's warm-up and decay are crossed.
K = dict(model="vit-tiny", batch_size=16, epochs=2, max_steps_per_epoch=6, lr=2e-3, weight_decay=0.1,
         warmup_ratio=0.3)
TOTAL, WARMUP = 12, 3  # 2 epochs x 6 steps; int(0.3 * 12)


def hand_lr(t: int, base: float = K["lr"], total: int = TOTAL, warmup: int = WARMUP) -> float:
    """Linear warm-up to `base` over `warmup` steps, then half a cosine to 0 over the rest."""
    if t < warmup:
        return base * (t + 1) / warmup
    return base / 2 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@pytest.fixture(scope="module")
def small():
    return data.load("embedded", subset=300)


@pytest.fixture(scope="module")
def both(small):
    suite = run(small, plugin="torch_ddp", precision="fp32", **K)
    return suite, plain.finetune(small, **K)


@pytest.mark.slow
def test_torch_ddp_losses_equal_the_plain_loop(both):
    suite, ref = both
    assert len(ref["step_loss"]) == TOTAL
    print("suite:", suite["step_loss"], "\nplain:", ref["step_loss"])
    assert suite["step_loss"] == ref["step_loss"]


def test_evaluation_is_the_plain_loops_on_the_test_split(both, small):
    suite, ref = both
    for got, want in zip(suite["epochs"], ref["epochs"], strict=True):
        print(f"epoch {got['epoch']}: suite accuracy {got['eval_accuracy']:.4f} loss {got['eval_loss']:.6f}, "
              f"plain {want['eval_accuracy']:.4f} {want['eval_loss']:.6f}")
        assert got["eval_samples"] == want["eval_samples"] == len(small.test) != len(small.train)
        assert (got["eval_accuracy"], got["eval_loss"]) == (want["eval_accuracy"], want["eval_loss"])


def test_plain_loop_learning_rate_is_the_formula(both):
    _, ref = both
    assert ref["step_lr"] == pytest.approx([hand_lr(t) for t in range(TOTAL)], rel=1e-12, abs=0)
    assert max(ref["step_lr"]) == pytest.approx(K["lr"], rel=1e-12)  # the peak is the base lr, never above


@pytest.mark.parametrize("warmup_ratio", [0.0, 0.3])
def test_suite_learning_rate_per_step_is_the_formula(small, cpu_process_group, warmup_ratio):
    """The learning rate each train_step runs at, read from the optimizer that steps."""
    cfg = RunConfig(plugin="torch_ddp", precision="fp32", device="cpu", dataset="embedded",
                    **(K | {"warmup_ratio": warmup_ratio}))
    s = train.setup(cfg, small)
    warmup = int(warmup_ratio * TOTAL)
    got = []
    for epoch in range(cfg.epochs):
        s.train_loader.sampler.set_epoch(epoch + 1)
        for _, batch in zip(range(s.steps_per_epoch), s.train_loader, strict=False):
            got.append(innermost_optimizer(s.optimizer).param_groups[0]["lr"])
            train.train_step(s, batch)
    assert s.total_steps == TOTAL
    assert got == pytest.approx([hand_lr(t, warmup=warmup) for t in range(TOTAL)], rel=1e-12, abs=0)
