"""A resumed run continues an uninterrupted one for at least 3 steps (loss, learning rate, optimizer
state, loss scale): torch_ddp and hybrid_parallel on CPU here, every plugin in the GPU tier's
checkpoint test. And the optimizer's param_groups survive a sharded save/load through a doubly
wrapped optimizer, as the Booster builds for torch_ddp_fp16 (its AMP wrapper around the plugin's
wrapper), with colossalai's own checkpoint IO."""

import pytest
import torch
from colossalai.checkpoint_io import GeneralCheckpointIO
from colossalai.interface import OptimizerWrapper

from tests.support.correctness import RESUMED_STEPS, check_roundtrip
from tests.support.runs import PARITY
from vitcore.processes import compat, launch
from vitcore.spec.config import RunConfig
from vitcore.training import train
from vitcore.training.checkpoint import innermost_optimizer, restore_param_groups


def _wrapped(lr):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    return model, OptimizerWrapper(OptimizerWrapper(torch.optim.Adam(model.parameters(), lr=lr)))


@pytest.mark.parametrize("fixed", [False, True], ids=["colossalai-alone", "with-restore_param_groups"])
def test_learning_rate_survives_a_sharded_optimizer_round_trip(tmp_path, fixed):
    compat.apply()
    model, opt = _wrapped(1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    innermost_optimizer(opt).param_groups[0]["lr"] = 5e-4  # where a schedule had moved it
    io = GeneralCheckpointIO()
    io.save_optimizer(opt.unwrap(), str(tmp_path / "opt"), shard=True)

    _, fresh = _wrapped(1e-3)
    io.load_optimizer(fresh.unwrap(), str(tmp_path / "opt"))
    if fixed:
        restore_param_groups(fresh)
    lr = innermost_optimizer(fresh).param_groups[0]["lr"]
    if fixed:
        assert lr == 5e-4
    else:  # the colossalai behaviour the fix exists for; if this starts failing, drop the fix
        assert lr == 1e-3


# The recipe of the parity runs (tests/runs.PARITY): warm-up 0.3 of 16 steps ends at step 4, so
# the 3 steps saved and the 3 resumed straddle the warm-up's end and the cosine's start, where a
# schedule that is not restored shows.
ROUNDTRIP = dict(PARITY, precision="fp32", epochs=1, max_steps_per_epoch=16, subset=300,
                 dataset="embedded", device="cpu", timeout_s=300)


@pytest.mark.parametrize("plugin", ["torch_ddp", "hybrid_parallel"])
@pytest.mark.slow
def test_resume_continues_loss_learning_rate_and_optimizer_state(plugin, tmp_path):
    cfg = RunConfig(plugin=plugin, **ROUNDTRIP)
    got = launch.run(train.checkpoint_roundtrip, cfg, None, 3, str(tmp_path / "ckpt"), RESUMED_STEPS,
                     world_size=1, device="cpu", timeout_s=300)[0]
    print("uninterrupted:", got["uninterrupted"]["loss"], got["uninterrupted"]["lr"])
    print("resumed:      ", got["resumed"]["loss"], got["resumed"]["lr"])
    check_roundtrip(plugin, got, "fp32")
    # One CPU process repeats the same float operations: a resume is exact there (measured: 0 difference).
    for what in ("loss", "lr", "optimizer_state"):
        assert got["resumed"][what] == got["uninterrupted"][what], f"{plugin} resumed {what} differs"
