"""Shared test helpers: run a training configuration in-process or in gloo processes."""

from __future__ import annotations

from vitcore import launch, train
from vitcore.config import RunConfig


def run(data=None, **kw) -> dict:
    cfg = RunConfig(**({"dataset": "embedded", "device": "cpu", "timeout_s": 300} | kw))
    return launch.run(train.finetune, cfg, data, world_size=cfg.world_size, device=cfg.device,
                      timeout_s=cfg.timeout_s)[0]
