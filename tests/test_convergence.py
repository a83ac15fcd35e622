"""Fine-tuning the tiny preset on the embedded data reaches a stated accuracy; lr=0 must not."""

from dataclasses import asdict

import pytest

from tests.helpers import run
from vitcore.checks import CONVERGENCE, CheckFailed, require_converged
from vitcore.model import get_preset

MIN_ACC, WHY = CONVERGENCE[("vit-tiny", "embedded")]
RECIPE = dict(model="vit-tiny", **asdict(get_preset("vit-tiny").recipe))


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["torch_ddp", "hybrid_parallel"])
def test_converges(plugin, embedded_1500):
    hist = run(embedded_1500, plugin=plugin, precision="fp32", **RECIPE)
    acc = require_converged(hist, MIN_ACC)
    print(f"{plugin}: held-out accuracy {acc:.3f} (threshold {MIN_ACC}: {WHY})")
    assert hist["step_loss"][-1] < hist["step_loss"][0]


@pytest.mark.slow
def test_check_fails_when_training_is_broken(embedded_1500):
    hist = run(embedded_1500, plugin="torch_ddp", precision="fp32", **(RECIPE | {"lr": 0.0}))
    with pytest.raises(CheckFailed, match="held-out accuracy"):
        require_converged(hist, MIN_ACC)


def test_diverged_run_reports_the_step(embedded_1500):
    hist = run(embedded_1500, plugin="torch_ddp", precision="fp32", **(RECIPE | {"lr": 1e12, "epochs": 1}))
    assert hist["status"] == "diverged" and hist["diverged_at_step"] >= 1
    assert "diverged: loss became" in hist["error"]
