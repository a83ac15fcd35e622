"""The dynamic loss scale across a checkpoint (vitcore.training.checkpoint): no Booster checkpoint holds it,
so the suite saves and restores it itself, for colossalai's fp16 mixins (ZeRO, Gemini, hybrid) and
for torch's GradScaler (torch_ddp_fp16). CPU: the real scaler classes, without a Booster."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from colossalai.amp.naive_amp.grad_scaler import base_grad_scaler, dynamic_grad_scaler
from colossalai.amp.naive_amp.mixed_precision_mixin import fp16
from colossalai.amp.naive_amp.mixed_precision_mixin.fp16 import FP16MixedPrecisionMixin

from vitcore.training import checkpoint


@pytest.fixture(autouse=True)
def _scalers_on_cpu(monkeypatch):
    """colossalai's CPU accelerator refuses get_current_device(), which DynamicGradScaler asks for
    its tensors: answer it here (the scaler's own logic is unchanged)."""
    cpu = SimpleNamespace(get_current_device=lambda: torch.device("cpu"), device_count=lambda: 1)
    for mod in (fp16, base_grad_scaler, dynamic_grad_scaler):
        monkeypatch.setattr(mod, "get_accelerator", lambda: cpu)


class _Mixin(FP16MixedPrecisionMixin):
    def check_local_overflow(self) -> bool:
        return False


def _zero_session(attr="mixed_precision_mixin", initial=32.0):
    """A session whose optimizer wraps one holding a colossalai fp16 mixin (as the Booster wraps
    LowLevelZeroOptimizer; Gemini names it mix_precision_mixin)."""
    inner = SimpleNamespace(**{attr: _Mixin(initial_scale=initial)}, optim=None)
    return SimpleNamespace(optimizer=SimpleNamespace(optim=inner))


def _amp_session(initial=65536.0):
    return SimpleNamespace(optimizer=SimpleNamespace(optim=None, scaler=torch.amp.GradScaler("cpu", init_scale=initial)))


SESSIONS = {"zero_mixin": _zero_session, "gemini_mixin": lambda: _zero_session("mix_precision_mixin"),
            "torch_gradscaler": _amp_session}


@pytest.mark.parametrize("kind", SESSIONS)
def test_set_then_read(kind):
    s = SESSIONS[kind]()
    start = checkpoint.loss_scale(s)
    checkpoint.set_loss_scale(s, start / 4)
    assert checkpoint.loss_scale(s) == start / 4


@pytest.mark.parametrize("kind", SESSIONS)
def test_saved_scale_is_restored_into_a_fresh_session(kind, tmp_path):
    saved = SESSIONS[kind]()
    checkpoint.set_loss_scale(saved, checkpoint.loss_scale(saved) / 4)
    checkpoint.save_loss_scale(saved, tmp_path)
    fresh = SESSIONS[kind]()
    assert checkpoint.loss_scale(fresh) == 4 * checkpoint.loss_scale(saved)  # the initial scale
    checkpoint.load_loss_scale(fresh, tmp_path)
    assert checkpoint.loss_scale(fresh) == checkpoint.loss_scale(saved)


def test_mixin_counters_round_trip(tmp_path):
    """DynamicGradScaler's own state_dict leaves out the steps since the last growth and the
    hysteresis count: a resume without them would grow or back off at another step."""
    saved = _zero_session()
    gs = saved.optimizer.optim.mixed_precision_mixin.grad_scaler
    gs._growth_step, gs._hysteresis_step = 7, 1
    checkpoint.save_loss_scale(saved, tmp_path)
    fresh = _zero_session()
    checkpoint.load_loss_scale(fresh, tmp_path)
    got = fresh.optimizer.optim.mixed_precision_mixin.grad_scaler
    assert (got._growth_step, got._hysteresis_step) == (7, 1)


def test_checkpoint_without_the_scale_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="loss_scale.pt"):
        checkpoint.load_loss_scale(_zero_session(), tmp_path)


def test_runs_without_a_dynamic_scale_save_nothing(tmp_path):
    s = SimpleNamespace(optimizer=SimpleNamespace(optim=None))
    assert checkpoint.loss_scale(s) is None
    checkpoint.save_loss_scale(s, tmp_path)
    checkpoint.load_loss_scale(s, tmp_path)  # nothing to restore, no error
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no dynamic loss scale"):
        checkpoint.set_loss_scale(s, 1.0)
