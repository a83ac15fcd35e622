"""The suite's own pretrained checkpoint: a stand-in for google/vit-base-patch16-224-in21k (issue 30).

The in21k weights are not reachable offline, so the suite makes a checkpoint the same way in
miniature: a ViT of the preset's architecture is pre-trained on real photographs of classes the
fine-tuning never sees (Fashion-MNIST's PRETRAIN_CLASSES, seven), then saved with save_pretrained
into a folder whose provenance file (vitcore-standin.json: classes, preset, steps, seed, data
source, git sha, time, and a SHA-256 of every tensor as written) names it
`vitcore-standin-fmnist7-<preset>`. `--weights FOLDER` loads it like any save_pretrained folder,
with a fresh classifier for the fine-tuning labels, and every result's weights field carries the
name (vitcore.inputs.model.standin_name). vitcore.training.transfer checks that the weights survive
boosting, against the fingerprints recorded here.

The loop is plain PyTorch (AdamW, warm-up + cosine by vitcore.training.plain's formula; fp32 on a
CPU, bf16 autocast with fp32 weights on CUDA), on
the grayscale photos resized once by PIL's bilinear filter (as the in21k processor resizes the
fine-tuning photos) and kept as uint8, scaled to [-1, 1] and made RGB per batch on the device, so
vit-base at 224 holds 2 GB of pixels, not 25.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from vitcore import ConfigError
from vitcore.files import write_json
from vitcore.inputs import photos
from vitcore.inputs.model import STANDIN_FILE, STANDIN_NOTE, get_preset
from vitcore.spec.env import git_sha
from vitcore.training.plain import build, lr_at

STAND_IN_FOR = "google/vit-base-patch16-224-in21k"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True, kw_only=True)
class PretrainRecipe:
    train_per_class: int
    test_per_class: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1
    seed: int = 0


RECIPES = {
    # measured on the 2-core CPU (scripts/transfer_thresholds.py): 7,000 photos x 6 epochs, 11 s idle,
    # held-out accuracy 0.916 on the 7 classes
    "vit-tiny": PretrainRecipe(train_per_class=1000, test_per_class=100, epochs=6, batch_size=64, lr=2e-3),
    # not measured yet (the GPU run is later): all 6,000 photos a class, 3 epochs at batch 128 is
    # 984 steps of ViT-B/16 at 224 (bf16 autocast on CUDA), estimated at a few minutes on an H200
    "vit-base": PretrainRecipe(train_per_class=6000, test_per_class=1000, epochs=3, batch_size=128, lr=3e-4,
                               weight_decay=0.1),
}


def standin_name(model: str) -> str:
    return f"vitcore-standin-fmnist{len(photos.PRETRAIN_CLASSES)}-{model}"


def recipe_for(model: str, **overrides) -> PretrainRecipe:
    get_preset(model)
    if model not in RECIPES:
        raise ConfigError(f"no pretraining recipe for model {model!r}; valid: {', '.join(RECIPES)}")
    try:
        recipe = replace(RECIPES[model], **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as e:
        raise ConfigError(f"pretraining recipe: {e}") from None
    for name in ("train_per_class", "test_per_class", "epochs", "batch_size"):
        if not isinstance(getattr(recipe, name), int) or getattr(recipe, name) < 1:
            raise ConfigError(f"pretraining {name} {getattr(recipe, name)!r} must be an integer >= 1")
    if not recipe.lr > 0:
        raise ConfigError(f"pretraining learning rate {recipe.lr!r} must be > 0")
    return recipe


def resized(images, size: int) -> torch.Tensor:
    """uint8 [n, 28, 28] -> uint8 [n, size, size], each photo resized by PIL's bilinear filter: what
    the in21k processor (vitcore.inputs.data.image_processor) does to the fine-tuning photos, exactly."""
    if images.shape[-1] == size:
        return torch.from_numpy(np.ascontiguousarray(images))
    return torch.from_numpy(np.stack([np.asarray(Image.fromarray(im, "L").resize((size, size), Image.BILINEAR))
                                      for im in images]))


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [n, s, s] -> float [n, 3, s, s] in [-1, 1] (gray to RGB), on the images' device."""
    return ((images.unsqueeze(1).float() / 255.0 - 0.5) / 0.5).expand(-1, 3, -1, -1)


@torch.no_grad()
def _accuracy(net, images, labels, batch_size: int) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = net(pixel_values=pixels(images[i:i + batch_size])).logits
        correct += int((logits.argmax(-1) == labels[i:i + batch_size]).sum())
    net.train()
    return correct / max(len(labels), 1)


def pretrain(out, *, model: str = "vit-tiny", device: str = "cpu", src=None, overwrite: bool = False,
             log=print, **overrides) -> dict:
    """Pre-train `model` on Fashion-MNIST's PRETRAIN_CLASSES and save the stand-in into `out`
    (save_pretrained + vitcore-standin.json); returns the provenance. `overrides`: PretrainRecipe
    fields (the tests use a smaller one). An existing non-empty `out` is an error unless overwrite."""
    out = Path(out).expanduser()
    recipe = recipe_for(model, **overrides)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"pretrain output {str(out)!r} exists and is not empty; choose another folder or overwrite")
    t0 = time.perf_counter()
    src = Path(src) if src is not None else photos.find_source()
    classes = photos.PRETRAIN_CLASSES
    labels = [photos.NAMES[c] for c in classes]
    size = get_preset(model).image_size
    (train_x, train_y), (test_x, test_y) = (
        (resized(x, size).to(device), torch.from_numpy(y).to(device))
        for x, y in (photos.class_arrays(src, split, classes, per) for split, per in
                     (("train", recipe.train_per_class), ("test", recipe.test_per_class))))
    net = build(model, labels, seed=recipe.seed, attention="sdpa").to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = len(train_y) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    warmup = int(recipe.warmup_ratio * total)
    step, losses = 0, []
    # bf16 autocast on CUDA: ViT-B/16's 984 steps at 224 in a minute or two instead of several; the
    # weights and AdamW stay fp32, the saved tensors too. fp32 on the CPU (where the thresholds were set)
    precision = "bf16-autocast" if str(device).startswith("cuda") else "fp32"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision != "fp32" else contextlib.nullcontext()
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(recipe.seed + epoch))
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size].to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, base_lr=recipe.lr, total=total, warmup=warmup)
            with autocast:
                loss = net(pixel_values=pixels(train_x[idx]), labels=train_y[idx]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
        losses.append(loss.item())
        log(f"[vitcore] pretrain {model} epoch {epoch}/{recipe.epochs} loss={losses[-1]:.4f}")
    accuracy = _accuracy(net, test_x, test_y, 256)
    name = standin_name(model)
    provenance = {
        "name": name, "stand_in_for": STAND_IN_FOR, "note": STANDIN_NOTE, "model": model,
        "classes": labels, "class_ids": list(classes),
        "held_out_classes": [photos.NAMES[c] for c in photos.FINETUNE_CLASSES],
        "data_source": f"Fashion-MNIST ({photos.PACKAGE}, {src}): the first {recipe.train_per_class} train "
                       f"and {recipe.test_per_class} test photos of each class",
        "train_images": len(train_y), "test_images": len(test_y), "steps": step, "recipe": asdict(recipe),
        "device": device, "precision": precision, "pretrain_accuracy": accuracy, "epoch_losses": losses,
        "seconds": round(time.perf_counter() - t0, 1), "git_sha": git_sha(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    _save(net, out, provenance, overwrite)
    log(f"[vitcore] {name}: held-out accuracy {accuracy:.3f} on the {len(labels)} pretraining classes after "
        f"{step} steps ({provenance['seconds']:.0f} s); saved to {out}")
    return read_provenance(out) | {"folder": str(out)}


def _save(net, out: Path, provenance: dict, overwrite: bool) -> None:
    """save_pretrained into a temporary folder beside `out`, the fingerprints read back from the
    file it wrote, then renamed into place: a reader never sees half a stand-in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp, safe_serialization=True)
    write_json(tmp / STANDIN_FILE, provenance | {"weights_file": WEIGHTS_FILE,
                                                 "tensors": fingerprints(tmp / WEIGHTS_FILE)})
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif out.exists():
        out.rmdir()  # empty (pretrain checked)
    tmp.rename(out)


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def fingerprints(path: Path) -> dict[str, dict]:
    """{tensor name: shape, dtype, sha256 of its bytes} of a safetensors file."""
    # safetensors: read where a stand-in is written, beside transformers' own import of it
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sha256": tensor_sha256(t)}
                for k in f.keys() for t in [f.get_tensor(k)]}


def read_provenance(folder) -> dict | None:
    """The stand-in's provenance, None for a folder without one (the in21k checkpoint, any other);
    a ConfigError naming an unreadable one."""
    path = Path(folder) / STANDIN_FILE
    if not path.exists():
        return None
    try:
        prov = json.loads(path.read_text())
        prov["tensors"], prov["name"]  # noqa: B018 - both must be there
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"stand-in provenance {path} cannot be read ({type(e).__name__}: {e})") from None
    return prov
