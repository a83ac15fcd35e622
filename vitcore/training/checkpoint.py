"""Saving and loading a training session through its Booster, with what a resume needs beyond it.

Each fix below is a colossalai behaviour measured on an H100 that made a resumed run differ from an
uninterrupted one; train.checkpoint_roundtrip (the GPU tier's checkpoint test) shows they agree.
This module knows the Session only by its attributes (booster, model, optimizer, scheduler: the
`Session` protocol below), so train imports it and not the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist


class Session(Protocol):
    """What a checkpoint needs of a training session: train.Session is one (no import of train here)."""

    booster: Any
    model: Any
    optimizer: Any
    scheduler: Any


def save_checkpoint(s: Session, path) -> None:
    path = Path(path)
    s.booster.save_model(s.model, str(path / "model"), shard=True)
    s.booster.save_optimizer(s.optimizer, str(path / "optimizer"), shard=True)
    s.booster.save_lr_scheduler(s.scheduler, str(path / "scheduler.pt"))
    if dist.get_rank() == 0:
        save_loss_scale(s, path)


def load_checkpoint(s: Session, path) -> None:
    path = Path(path)
    s.booster.load_model(s.model, str(path / "model"))
    s.booster.load_optimizer(s.optimizer, str(path / "optimizer"))
    restore_param_groups(s.optimizer)
    _steps_to_param_device(innermost_optimizer(s.optimizer))
    s.booster.load_lr_scheduler(s.scheduler, str(path / "scheduler.pt"))
    load_loss_scale(s, path)


# No checkpoint of the Booster holds the dynamic loss scale: the AMP optimizer (torch_ddp_fp16) does
# not save its GradScaler (a resumed run restarted the scale and skipped a step, measured on an H100:
# 1.3% off), and the ZeRO, Gemini and hybrid optimizers' state dicts leave out their fp16 mixin's
# DynamicGradScaler (colossalai 0.5.0: low_level_optim.state_dict, gemini_optimizer.state_dict).
LOSS_SCALE_FILE = "loss_scale.pt"
_COUNTERS = ("_growth_step", "_hysteresis_step")  # DynamicGradScaler's state_dict leaves them out


def save_loss_scale(s: Session, path) -> None:
    scaler = _loss_scaler(s)
    if scaler is None:
        return
    if _is_colossalai(scaler):
        state = {"kind": "colossalai", "state": scaler.state_dict(),
                 "counters": {k: getattr(scaler, k) for k in _COUNTERS if hasattr(scaler, k)}}
    else:
        state = {"kind": "torch", "state": scaler.state_dict()}
    torch.save(state, Path(path) / LOSS_SCALE_FILE)


def load_loss_scale(s: Session, path) -> None:
    """Restore the scale saved by save_loss_scale; a run with a dynamic loss scale whose checkpoint
    lacks it is an error (it would restart from the initial scale, silently)."""
    scaler = _loss_scaler(s)
    if scaler is None:
        return
    file = Path(path) / LOSS_SCALE_FILE
    if not file.exists():
        raise FileNotFoundError(f"checkpoint {path} holds no {LOSS_SCALE_FILE}: the loss scale cannot be restored")
    state = torch.load(file)
    scaler.load_state_dict(state["state"])
    for k, v in state.get("counters", {}).items():
        setattr(scaler, k, v)


def restore_param_groups(optimizer) -> None:
    """colossalai's sharded-optimizer loader writes the saved param_groups (learning rate at the
    saved step, betas, ...) into `unwrap()`'s instance __dict__. For the Booster's AMP optimizer
    (torch_ddp_fp16) unwrap() is another OptimizerWrapper whose `param_groups` is a property, so
    the write is shadowed and lost: the resumed step ran at the fresh schedule's learning rate
    (measured on an H100: first resumed loss equal, second 1.8% off, loss scale equal). Move the
    stranded groups' hyperparameters into the optimizer that steps."""
    inner = innermost_optimizer(optimizer)
    w = optimizer
    while w is not inner and hasattr(w, "optim"):
        stranded = vars(w).pop("param_groups", None)
        if stranded is not None:
            for group, saved in zip(inner.param_groups, stranded, strict=True):
                group.update({k: v for k, v in saved.items() if k != "params"})
        w = w.optim


def _steps_to_param_device(opt) -> None:
    """colossalai's checkpoint loader leaves Adam's `step` state on the CPU; the fused kernel
    refuses that after a resume (measured on an H100), so it goes back beside its parameter."""
    if not any(g.get("fused") for g in opt.param_groups):
        return
    for p, st in opt.state.items():
        step = st.get("step")
        if step is not None and hasattr(step, "device") and step.device != p.device:
            st["step"] = step.to(p.device)


def innermost_optimizer(optimizer):
    """The torch Optimizer under the Booster's wrappers (the AMP wrapper wraps a wrapper)."""
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optim"):
        optimizer = optimizer.optim
    return optimizer


def _loss_scaler(s: Session):
    """Where this run's dynamic loss scale lives: the DynamicGradScaler of the ZeRO / Gemini / hybrid
    fp16 mixin under the optimizer's wrappers, else the AMP GradScaler (enabled), else None (fp32,
    bf16: their mixins have no scaler)."""
    opt = s.optimizer
    while opt is not None:
        for name in ("mixed_precision_mixin", "mix_precision_mixin", "mixed_precision"):
            if hasattr(mixin := getattr(opt, name, None), "grad_scaler"):
                return mixin.grad_scaler
        opt = getattr(opt, "optim", None)
    scaler = getattr(s.optimizer, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def _is_colossalai(scaler) -> bool:
    """colossalai's BaseGradScaler (the mixins'), not torch's GradScaler: the two APIs differ."""
    # colossalai: 4-8 s to import, paid only when this runs
    from colossalai.amp.naive_amp.grad_scaler import BaseGradScaler

    return isinstance(scaler, BaseGradScaler)


def loss_scale(s: Session):
    """The dynamic loss scale a resumed run must continue (None where the plugin has none: fp32, bf16)."""
    scaler = _loss_scaler(s)
    if scaler is None:
        return None
    return float(scaler.scale.item()) if _is_colossalai(scaler) else float(scaler.get_scale())


def set_loss_scale(s: Session, value: float) -> None:
    """Set the dynamic loss scale, as overflows backing it off would: a checkpoint saved after it
    shows whether a load restores the scale or restarts from the initial one."""
    scaler = _loss_scaler(s)
    if scaler is None:
        raise ValueError("this run has no dynamic loss scale")
    if _is_colossalai(scaler):
        scaler.scale.fill_(value)  # the scale tensor itself (load_state_dict would replace it)
    else:  # torch's public way, also before the first step made its scale tensor
        scaler.load_state_dict(scaler.state_dict() | {"scale": float(value)})
