"""A hand-written plain-PyTorch fine-tuning loop: the independent reference for training semantics.

The parity tests compare each plugin with torch_ddp through the same `train.train_step`, so a bug
in the shared loop (a schedule that never steps, evaluation on the train split, labels paired with
the wrong images) cancels out there. This loop shares no code with vitcore.training.train or vitcore.inputs.data's
preprocessing: it decodes the images itself, builds the model from the preset's ViT config, steps
torch's AdamW, sets the learning rate from the warm-up + cosine formula by hand and evaluates on the
test split. On a CPU, torch_ddp fp32 must reproduce its losses bit for bit
(tests/test_training_reference.py), and the convergence tests hold every plugin to its accuracy.

What it mirrors on purpose (the suite's documented semantics, not its code): the training order is
a per-epoch permutation seeded with `shuffle_seed + epoch` (what torch's DistributedSampler draws
with its default seed 0 on one rank, which Colossal-AI's prepare_dataloader does not change), full
batches only, and the model's weights drawn right after `torch.manual_seed(seed)`.
"""

from __future__ import annotations

import io
import math
import time

import datasets
import torch
from PIL import Image
from transformers import ViTForImageClassification, ViTImageProcessor

from vitcore import ConfigError
from vitcore.inputs.model import get_preset


def lr_at(step: int, *, base_lr: float, total: int, warmup: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up to base_lr over
    `warmup` steps, then half a cosine from base_lr towards 0 over the remaining steps."""
    if step < warmup:
        return base_lr * ((step + 1) / warmup)
    return base_lr * (0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def pixels_and_labels(split, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a datasets split decoded, resized to image_size and scaled to [-1, 1] (the
    in21k checkpoint's processor settings), with the split's own label for each row."""
    proc = ViTImageProcessor(size={"height": image_size, "width": image_size}, do_resize=True,
                             do_rescale=True, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    raw = split.cast_column("image", datasets.Image(decode=False))
    pixels, labels = [], []
    for row in raw:
        img = row["image"]
        src = io.BytesIO(img["bytes"]) if img.get("bytes") else img["path"]
        pixels.append(proc(Image.open(src).convert("RGB"), return_tensors="pt")["pixel_values"][0])
        labels.append(int(row["label"]))
    return torch.stack(pixels), torch.tensor(labels, dtype=torch.int64)


def build(model: str, labels: list[str], *, seed: int, attention: str, weights: str | None = None):
    """The preset's ViT drawn right after torch.manual_seed(seed); from a save_pretrained folder
    `weights` with a classifier of len(labels) rows (transformers re-initialises one of another shape)."""
    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    if weights is not None:
        return ViTForImageClassification.from_pretrained(
            weights, local_files_only=True, num_labels=len(labels), id2label=id2label,
            label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True, attn_implementation=attention)
    config = get_preset(model).hf_config(num_labels=len(labels), id2label=id2label, attention=attention)
    return ViTForImageClassification(config)


@torch.no_grad()
def evaluate(net, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict:
    """Held-out loss and accuracy over every image given (the test split), in order."""
    net.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(labels), batch_size):
        x, y = pixels[i:i + batch_size], labels[i:i + batch_size]
        logits = net(pixel_values=x).logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y).double()) * len(y)
        correct += int((logits.argmax(-1) == y).sum())
    net.train()
    n = len(labels)
    return {"eval_loss": loss_sum / max(n, 1), "eval_accuracy": correct / max(n, 1), "eval_samples": n}


# precision -> the autocast dtype of forward and loss (None: fp32 throughout). Weights and AdamW stay
# fp32 either way, the way torch's own mixed precision runs; fp16 scales the loss (GradScaler).
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def finetune(data, *, model: str, lr: float, weight_decay: float, warmup_ratio: float, epochs: int,
             batch_size: int, max_steps_per_epoch: int | None = None, seed: int = 42,
             attention: str = "sdpa", shuffle_seed: int = 0, device: str = "cpu", weights: str | None = None,
             precision: str = "fp32") -> dict:
    """Fine-tune `model` on data.train, evaluating on data.test after every epoch, on `device` in
    `precision` (AUTOCAST). Returns the per-step losses and learning rates and the per-epoch
    evaluation, like train.finetune. weights: a save_pretrained folder to start from (None: random
    initialisation)."""
    if precision not in AUTOCAST:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(AUTOCAST)}")
    t0 = time.perf_counter()
    cast = torch.autocast(torch.device(device).type, dtype=AUTOCAST[precision], enabled=AUTOCAST[precision] is not None)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
    size = get_preset(model).image_size
    train_x, train_y = (t.to(device) for t in pixels_and_labels(data.train, size))
    test_x, test_y = (t.to(device) for t in pixels_and_labels(data.test, size))
    net = build(model, list(data.labels), seed=seed, attention=attention, weights=weights).to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train_y) // batch_size
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total = max(1, steps_per_epoch * epochs)
    warmup = int(warmup_ratio * total)
    hist = {"plugin": "plain_pytorch", "model": model, "device": device, "precision": precision, "dataset": data.source,
            "weights": weights or "random-init", "step_loss": [],
            "step_lr": [], "epochs": [], "status": "ok"}
    step = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(shuffle_seed + epoch))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, base_lr=lr, total=total, warmup=warmup)
            with cast:
                loss = net(pixel_values=train_x[idx], labels=train_y[idx]).loss
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            hist["step_loss"].append(loss.item())
            hist["step_lr"].append(opt.param_groups[0]["lr"])
            step += 1
        with cast:
            hist["epochs"].append({"epoch": epoch, **evaluate(net, test_x, test_y, batch_size)})
    hist["seconds"] = time.perf_counter() - t0
    return hist
