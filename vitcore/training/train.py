"""Fine-tuning with any registry plugin: setup, train step, evaluation, history.

One code path for every plugin; what differs (pipeline steps, which rank owns the loss, which
ranks share data) is read from the plugin object rather than from its name. Saving and loading
through the Booster, with the fixes a resume needs, is vitcore.training.checkpoint's.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from colossalai.booster import Booster
from colossalai.nn.optimizer import HybridAdam
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from vitcore import DataError, Diverged
from vitcore.inputs import data as data_mod
from vitcore.inputs import model as model_mod
from vitcore.processes.launch import resolve_device
from vitcore.spec.config import RunConfig, zero_steps_message
from vitcore.spec.plugins import BuildContext, booster_kwargs
from vitcore.training import compiled
from vitcore.training.checkpoint import (
    innermost_optimizer,
    load_checkpoint,
    loss_scale,
    save_checkpoint,
    set_loss_scale,
)
from vitcore.training.schedule import warmup_cosine


@dataclass
class Layout:
    """Where this rank sits: its data-parallel shard, and whether it holds the loss and logits."""

    dp_rank: int
    dp_size: int
    owns_output: bool  # last pipeline stage and tensor-parallel rank 0


def layout_of(plugin) -> Layout:
    dp_group = getattr(plugin, "dp_group", None)  # HybridParallelPlugin's process-group mesh
    if dp_group is None:
        return Layout(dist.get_rank(), dist.get_world_size(), True)
    stage = plugin.stage_manager
    owns = (stage is None or stage.is_last_stage()) and dist.get_rank(plugin.tp_group) == 0
    return Layout(dist.get_rank(dp_group), plugin.dp_size, owns)


@dataclass
class Session:
    cfg: RunConfig
    device: str
    plugin: Any
    booster: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    test_loader: Any
    layout: Layout
    dataset_source: str
    weights_source: str
    steps_per_epoch: int
    total_steps: int
    attention: Callable[[], Any] = contextlib.nullcontext
    """The SDPA-kernel context of a forward and backward (the entry's `sdpa_backend`), made once."""
    graphs_before: int = 0
    """dynamo's captured graphs when the session was set up (compiling is lazy: its first step adds them)."""
    breaks_before: dict = field(default_factory=dict)
    """dynamo's refusal reasons at setup (compiled.breaks), so a run states the ones its own steps met."""

    @property
    def compiled_graphs(self) -> int:
        """Graphs captured since setup: 0 for a compiled run means nothing was compiled."""
        return compiled.graphs_since(self.graphs_before)

    @property
    def pipelined(self) -> bool:
        return self.cfg.pp_size > 1


def _criterion(outputs, inputs=None):
    return outputs.loss


def make_optimizer(cfg: RunConfig, model, device: str):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.spec.optimizer == "hybrid_adam":
        return HybridAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, adamw_mode=True)
    return adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_adam(cfg, device))


def fused_adam(cfg: RunConfig, device: str) -> bool:
    """Whether the optimizer runs fused, as applied: HybridAdam always; torch's Adam on CUDA when asked."""
    return cfg.spec.optimizer == "hybrid_adam" or bool(cfg.fused_optimizer and device == "cuda")


def adamw(params, *, fused: bool = False, **kw):
    """AdamW maths. On torch >= 2.6 this is Adam(decoupled_weight_decay=True): colossalai's FSDP
    plugin re-creates the optimizer from `optimizer.defaults`, which there include
    `decoupled_weight_decay`, a keyword AdamW itself rejects (measured on torch 2.11).
    fused: one CUDA kernel for the whole update (see checkpoint.load_checkpoint for its resume quirk)."""
    if fused:
        kw["fused"] = True

    if "decoupled_weight_decay" in inspect.signature(torch.optim.Adam).parameters:
        return torch.optim.Adam(params, decoupled_weight_decay=True, **kw)
    return torch.optim.AdamW(params, **kw)


def _eval_loader(dataset, batch_size: int, layout: Layout, multiple: int):
    """Each data-parallel shard evaluates a disjoint slice (no DistributedSampler padding, so no
    sample is counted twice); pipelines need each batch to split into whole microbatches."""
    idx = list(range(layout.dp_rank, len(dataset), layout.dp_size))
    idx = idx[: len(idx) - len(idx) % multiple]
    bs = max(multiple, batch_size - batch_size % multiple)
    return DataLoader(Subset(dataset, idx), batch_size=bs, shuffle=False,
                      generator=torch.Generator().manual_seed(0))


@dataclass
class _Loaders:
    """What a session trains and evaluates on (no loaders for the benchmark's synthetic batch)."""

    labels: list[str]
    source: str
    train_loader: Any
    test_loader: Any
    steps_per_epoch: int


def _loaders(cfg: RunConfig, data, plugin, layout: Layout, synthetic_batch: bool) -> _Loaders:
    if synthetic_batch:
        return _Loaders(list(data_mod.LABELS), "synthetic-tensors (random pixels on the device)", None, None,
                     cfg.max_steps_per_epoch or 1)
    if data is None:
        data = data_mod.load(cfg.dataset, subset=cfg.subset, seed=0)
    proc = data_mod.image_processor(cfg.preset.image_size)
    train_ds, test_ds = data_mod.Preprocessed(data.train, proc), data_mod.Preprocessed(data.test, proc)
    train_loader = plugin.prepare_dataloader(train_ds, batch_size=cfg.batch_size, shuffle=True,
                                             seed=cfg.seed, drop_last=True)
    test_loader = _eval_loader(test_ds, cfg.batch_size, layout, cfg.pp_size)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0 and cfg.epochs > 0:
        raise DataError(zero_steps_message(len(train_ds), cfg.batch_size, layout.dp_size))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    return _Loaders(data.labels, data.source, train_loader, test_loader, steps_per_epoch)


def setup(cfg: RunConfig, data=None, *, synthetic_batch: bool = False) -> Session:
    """Build model, optimizer, schedule, loaders and boost them with the plugin.

    synthetic_batch: the benchmark's input, one random batch already on the device (as the study),
    instead of the dataset.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    spec = cfg.spec
    plugin = spec.build(BuildContext(precision=cfg.precision, tp_size=cfg.tp_size, pp_size=cfg.pp_size,
                                     plugin_kernels=cfg.plugin_kernels, max_norm=cfg.max_norm))
    layout = layout_of(plugin)
    d = _loaders(cfg, data, plugin, layout, synthetic_batch)
    model, weights_source = model_mod.build_model(cfg.preset, labels=d.labels, attention=cfg.attention,
                                                  weights=cfg.weights, grad_checkpoint=cfg.grad_checkpoint)
    if device == "cuda":
        model = model.cuda()
    model = compiled.apply(model, spec, "before", cfg.compile)
    optimizer = make_optimizer(cfg, model, device)
    booster = Booster(plugin=plugin, **booster_kwargs(spec, cfg.precision))
    model, optimizer, _, _, _ = booster.boost(model, optimizer, _criterion, None, None)
    model = compiled.apply(model, spec, "after", cfg.compile)
    # The schedule is attached after boosting, to the optimizer that actually steps: the FSDP
    # plugin re-initialises the optimizer from its defaults during boost, which silently reset a
    # schedule made before to the full learning rate for step 1 (measured: FSDP fp32 7% off
    # torch_ddp on an H100).
    total = max(1, d.steps_per_epoch * max(cfg.epochs, 1))
    scheduler = warmup_cosine(innermost_optimizer(optimizer), total, int(cfg.warmup_ratio * total))
    return Session(cfg, device, plugin, booster, model, optimizer, scheduler, d.train_loader,
                   d.test_loader, layout, d.source, weights_source, d.steps_per_epoch, total,
                   attention=compiled.sdpa_factory(spec), graphs_before=compiled.graphs(),
                   breaks_before=compiled.breaks())


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(s: Session, batch: dict):
    """One optimizer step. Returns this rank's loss tensor (None where it does not own one);
    no host synchronisation, so the benchmark can time it back to back."""
    with s.attention():
        if s.pipelined:
            out = s.booster.execute_pipeline(iter([batch]), s.model, _criterion, s.optimizer, return_loss=True)
            loss = out["loss"] if s.layout.owns_output else None
        else:
            loss = s.model(**batch).loss
            s.booster.backward(loss, s.optimizer)
    s.optimizer.step()
    s.optimizer.zero_grad()
    s.scheduler.step()
    return loss


def global_mean(s: Session, value) -> float:
    """Mean over data-parallel shards of a per-shard scalar held by the owning ranks."""
    t = torch.zeros(1, dtype=torch.float64, device=s.device)
    if value is not None and s.layout.owns_output:
        t += value.detach().double()
    dist.all_reduce(t)
    return (t / s.layout.dp_size).item()


def forward_logits(s: Session, batch: dict):
    """Logits and loss of one batch without gradients (None on ranks that do not own them)."""
    with torch.no_grad(), s.attention():
        if s.pipelined:
            out = s.booster.execute_pipeline(iter([batch]), s.model, _criterion, None,
                                             return_loss=True, return_outputs=True)
            if not s.layout.owns_output:
                return None, None
            return out["outputs"]["logits"], out["loss"]
        out = s.model(**batch)
        return out.logits, out.loss


def evaluate(s: Session) -> dict:
    s.model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=s.device)  # loss sum, correct, count
    for batch in s.test_loader:
        batch = to_device(batch, s.device)
        logits, loss = forward_logits(s, batch)
        if logits is not None:
            n = batch["labels"].numel()
            totals[0] += loss.double() * n
            totals[1] += (logits.argmax(-1) == batch["labels"]).sum()
            totals[2] += n
    dist.all_reduce(totals)  # only owning ranks contributed, one per data-parallel shard
    s.model.train()
    loss_sum, correct, count = totals.tolist()
    return {"eval_loss": loss_sum / max(count, 1), "eval_accuracy": correct / max(count, 1),
            "eval_samples": int(count)}


def describe(s: Session) -> dict:
    cfg = s.cfg
    return {"plugin": cfg.plugin, "family": cfg.spec.family, "precision": cfg.precision,
            "profile": cfg.profile, "model": cfg.model, "attention": cfg.attention,
            "grad_checkpoint": cfg.grad_checkpoint, "compile": cfg.compile,
            "compile_plan": compiled.describe(cfg.spec, cfg.compile),
            "fused_optimizer": fused_adam(cfg, s.device),
            "plugin_kernels": cfg.plugin_kernels,
            "freeze_gc": cfg.freeze_gc,
            "world_size": cfg.world_size, "tp_size": cfg.tp_size, "pp_size": cfg.pp_size,
            "dp_size": s.layout.dp_size, "batch_size": cfg.batch_size, "device": s.device,
            "dataset": s.dataset_source, "weights": s.weights_source}


def finetune(cfg: RunConfig, data=None, progress: bool = False) -> dict:
    """Runs on every rank (see launch.run). Returns the history; every rank holds the same numbers.

    A NaN or inf loss ends the run with status "diverged" and the step where it happened.
    """
    s = setup(cfg, data)
    hist = describe(s) | {"lr": cfg.lr, "epochs_requested": cfg.epochs, "step_loss": [],
                          "epochs": [], "status": "ok"}
    if dist.get_rank() == 0:
        print(f"[vitcore] plugin={cfg.plugin} precision={cfg.precision} dataset={s.dataset_source} "
              f"weights={s.weights_source}", flush=True)
    bar = _progress(s, progress)
    step = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            losses, step = _train_epoch(s, epoch, step, bar)
            hist["step_loss"] += losses
            row = {"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1), **evaluate(s),
                   "seconds": time.perf_counter() - t0}
            hist["epochs"].append(row)
            if dist.get_rank() == 0:
                print(f"[vitcore] epoch {epoch}/{cfg.epochs} train_loss={row['train_loss']:.4f} "
                      f"eval_loss={row['eval_loss']:.4f} eval_accuracy={row['eval_accuracy']:.4f} "
                      f"({row['seconds']:.1f}s)", flush=True)
        if cfg.epochs == 0:
            hist["epochs"].append({"epoch": 0, "train_loss": None, **evaluate(s), "seconds": 0.0})
    except Diverged as e:
        hist.update(status="diverged", diverged_at_step=e.step, error=str(e))
    finally:
        if bar is not None:
            bar.close()
    if cfg.checkpoint_dir and hist["status"] == "ok":
        save_checkpoint(s, cfg.checkpoint_dir)
        hist["checkpoint"] = cfg.checkpoint_dir
    return hist | compiled.facts(s)


def _train_epoch(s: Session, epoch: int, step: int, bar) -> tuple[list[float], int]:
    """One epoch's steps; returns their losses and the global step reached. Raises Diverged."""
    if hasattr(s.train_loader.sampler, "set_epoch"):  # a new shuffle per epoch
        s.train_loader.sampler.set_epoch(epoch)
    losses = []
    for i, batch in enumerate(s.train_loader):
        if i >= s.steps_per_epoch:
            break
        step += 1
        loss = global_mean(s, train_step(s, to_device(batch, s.device)))
        if not math.isfinite(loss):
            raise Diverged(step, loss)
        losses.append(loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
    return losses, step


def steps_then_probe(cfg: RunConfig, data, steps: int, probe: dict) -> dict:
    """K optimizer steps on the dataset's batches, then the logits of a fixed probe batch: what
    the parity tests compare against torch_ddp. Runs on every rank."""
    s = setup(cfg, data)
    losses = []
    for i, batch in enumerate(s.train_loader):
        if i >= steps:
            break
        losses.append(global_mean(s, train_step(s, to_device(batch, s.device))))
    s.model.eval()
    logits, _ = forward_logits(s, to_device(probe, s.device))
    return describe(s) | {"step_loss": losses, **compiled.facts(s),
                          "probe_logits": None if logits is None else logits.float().cpu().tolist()}


def checkpoint_roundtrip(cfg: RunConfig, data, steps: int, path, after: int = 3) -> dict:
    """Train `steps`, save through the booster, run `after` more steps; then a fresh booster loads
    the checkpoint and runs the same steps. Per step: loss, learning rate and loss scale, and the
    optimizer state at the end, for the uninterrupted and the resumed run. Three steps at least:
    the second resumed loss reflects only the first resumed update, so a schedule that was not
    restored shows from the third on."""
    s = setup(cfg, data)
    batches = [to_device(b, s.device) for _, b in zip(range(steps + after), s.train_loader, strict=False)]
    for b in batches[:steps]:
        train_step(s, b)
    if (scale := loss_scale(s)) is not None:
        # a quarter of it, as two overflows would leave it: no fp16 case overflows in these few
        # steps, and a load that restarted from the initial scale must not pass unseen
        set_loss_scale(s, scale / 4)
    save_checkpoint(s, path)
    dist.barrier()
    out = {"loss_scale_saved": loss_scale(s), "uninterrupted": _continue(s, batches[steps:])}
    del s
    fresh = setup(cfg, data)
    load_checkpoint(fresh, path)
    out["loss_scale_loaded"] = loss_scale(fresh)
    out["resumed"] = _continue(fresh, batches[steps:])
    # the resumed session's own: it compiles afresh (dynamo is reset per compiled setup)
    return describe(fresh) | out | compiled.facts(fresh)


def _continue(s: Session, batches) -> dict:
    rows = {"loss": [], "lr": [], "loss_scale": []}
    for b in batches:
        rows["lr"].append(float(innermost_optimizer(s.optimizer).param_groups[0]["lr"]))
        rows["loss"].append(global_mean(s, train_step(s, b)))
        rows["loss_scale"].append(loss_scale(s))
    return rows | {"optimizer_state": optimizer_state_summary(s.optimizer)}


def optimizer_state_summary(optimizer) -> list[float]:
    """Sum and norm of every state tensor of this rank's optimizer (Adam's step and moments), in
    parameter order: equal lists mean the optimizer state round-tripped (in any plugin's layout)."""
    inner = innermost_optimizer(optimizer)
    out = []
    for group in inner.param_groups:
        for p in group["params"]:
            for _, v in sorted(inner.state.get(p, {}).items()):
                if torch.is_tensor(v):
                    v = v.detach().double()
                    out += [float(v.sum()), float(v.norm())]
                elif isinstance(v, (int, float)):
                    out.append(float(v))
    return out


def _progress(s: Session, enabled: bool):
    if not enabled or dist.get_rank() != 0:
        return None
    return tqdm(total=s.steps_per_epoch * s.cfg.epochs, desc=f"{s.cfg.plugin} {s.cfg.precision}",
                unit="step", leave=False)
