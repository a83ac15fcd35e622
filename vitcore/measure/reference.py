"""The plain-PyTorch reference loop and the hand-written twins of registry entries.

The reference is a training loop as an expert would write it by hand (bf16 autocast, SDPA, fused
AdamW, optionally torch.compile): the report divides every plugin's images/s by it. A twin
(`bare_<entry>`) reproduces one registry entry (same precision, optimizer and DDP wrapper) without
the Booster, so the report can state the harness's own overhead. An entry has a twin where its spec
names `twin_precision`. Where timm is importable, the same loop also runs timm's ViT at the preset's
sizes (`timm_eager`, `timm_compiled`): what a user would write with timm (issue 17), so the reference
is no slower than that.

A Reference is a planned point like a RunConfig: bench's run loop calls its `measure(timing)` and,
when that fails, its `skeleton(status=..., error=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.distributed as dist

from vitcore.inputs import data as data_mod
from vitcore.inputs import model as model_mod
from vitcore.measure.profiling import trace, trace_path
from vitcore.measure.timing import (
    Timing,
    cuda_mem,
    measured_fields,
    random_batch,
    release_memory,
    timed,
    unmeasured_fields,
)
from vitcore.processes.launch import first_line, resolve_device
from vitcore.spec import plugins
from vitcore.spec.config import PROFILES
from vitcore.training.plain import AUTOCAST
from vitcore.training.train import adamw

FAMILY = "reference"  # the family of every point measured here (no Colossal-AI plugin)
COMPILE_ON_CPU = ("torch.compile on a CPU measures minutes of C++ compilation per shape, "
                  "not the plugins; run on a GPU")
FP16_ON_CPU = "fp16 autocast with a GradScaler needs CUDA"
TIMM_ON_CPU = "the timm reference is measured on a GPU only (on a CPU the eager HF reference stands for both)"
TIMM_ARCH = "vit_base_patch16_224"  # timm's ViT-B/16; the preset's sizes override it (equal for vit-base)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reference:
    """A plain-PyTorch loop as an expert would write it by hand: no plugin, no Booster, inputs on
    the device, optionally torch.compile.

    The default is the issue's reference (bf16 autocast, SDPA, fused AdamW). `mirrors` names the
    registry entry a *bare* loop reproduces (same precision, optimizer and DDP wrapper), so the
    report can state the harness's own overhead over a hand-written loop."""

    model: str
    batch_size: int
    compile: bool = False
    precision: str = "bf16"  # bf16 / fp16 autocast (fp16 with a GradScaler) or fp32
    fused: bool = True  # fused AdamW kernel on CUDA
    ddp: bool = False
    mirrors: str | None = None
    impl: str = "hf"  # "hf": transformers' ViTForImageClassification; "timm": timm's VisionTransformer
    device: str = "auto"
    seed: int = 42
    lr: float = 3e-4
    weight_decay: float = 0.1
    timeout_s: float = 1800.0
    world_size: int = 1
    profile: str = "reference"
    variant: str = ""

    def __post_init__(self):
        if self.impl not in ("hf", "timm"):
            raise ValueError(f"reference impl {self.impl!r}; valid: hf, timm")

    @property
    def plugin(self) -> str:
        if self.mirrors:
            return f"bare_{self.mirrors}"
        prefix = "timm" if self.impl == "timm" else "reference"
        return f"{prefix}_compiled" if self.compile else f"{prefix}_eager"

    def measure(self, timing: Timing) -> dict:
        return measure_reference(self, timing)

    def skeleton(self, **extra) -> dict:
        return unmeasured_fields(self, family=FAMILY, **extra)


def bare_loop(spec: plugins.PluginSpec, *, model: str, batch_size: int, device: str) -> Reference:
    """The hand-written twin of a registry entry (harness-overhead measurement); it mirrors the
    fast profile, so its optimizer is fused where the fast profile's is."""
    if spec.twin_precision is None:
        raise ValueError(f"plugin {spec.name!r} has no hand-written twin")
    return Reference(model=model, batch_size=batch_size, precision=spec.twin_precision, ddp=True,
                     mirrors=spec.name, fused=PROFILES["fast"]["fused_optimizer"], device=device, profile="fast")


def twins(names: Iterable[str]) -> list[plugins.PluginSpec]:
    """The entries among `names` that have a twin, in registry order."""
    wanted = set(names)
    return [s for s in plugins.REGISTRY.values() if s.twin_precision and s.name in wanted]


def timm_missing() -> str | None:
    """Why timm's reference cannot run here (not installed, or its import fails), or None."""
    try:
        import timm  # noqa: F401  (needs torchvision built for this torch)
    except Exception as e:  # noqa: BLE001 - e.g. torchvision built for another torch: a reason, not a crash
        return f"timm is not importable ({first_line(e)}); install timm (and torchvision) to measure it"
    return None


def plan(batch_sizes, *, model: str, device: str, twins_of: Iterable[str] = ()) -> tuple[list[list[Reference]], list[dict]]:
    """The plain-PyTorch reference, eager and compiled (compiled only on CUDA), the same loop on
    timm's ViT (on CUDA, where timm imports), and the bare hand-written twins of the entries named
    in `twins_of` that have one; plus the skipped ones with their reason."""
    groups = [[Reference(model=model, batch_size=bs, compile=False, device=device) for bs in batch_sizes]]
    skipped = []
    if device == "cuda":
        groups.append([Reference(model=model, batch_size=bs, compile=True, device=device) for bs in batch_sizes])
    else:
        skipped.append({"plugin": "reference_compiled", "precision": "bf16", "reason": COMPILE_ON_CPU})
    timm_reason = TIMM_ON_CPU if device != "cuda" else timm_missing()
    for compiled in (False, True):
        loops = [Reference(model=model, batch_size=bs, compile=compiled, impl="timm", device=device) for bs in batch_sizes]
        if timm_reason:
            skipped.append({"plugin": loops[0].plugin, "precision": "bf16", "reason": timm_reason})
        else:
            groups.append(loops)
    for spec in twins(twins_of):
        loops = [bare_loop(spec, model=model, batch_size=bs, device=device) for bs in batch_sizes]
        if device == "cpu" and loops[0].precision != "fp32":
            skipped.append({"plugin": loops[0].plugin, "precision": loops[0].precision, "reason": FP16_ON_CPU})
            continue
        groups.append(loops)
    return groups, skipped


def timm_model(preset: model_mod.ModelPreset, num_classes: int):
    """timm's VisionTransformer at the preset's sizes, randomly initialised; returns (model, weights
    source, fields the point records: timm's version)."""
    # timm: optional, only for its reference points
    import timm

    net = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes, img_size=preset.image_size,
                            patch_size=preset.patch_size, embed_dim=preset.hidden_size, depth=preset.num_layers,
                            num_heads=preset.num_heads, mlp_ratio=preset.intermediate_size / preset.hidden_size)
    for block in net.blocks:  # SDPA, as the HF reference (timm picks it unless TIMM_FUSED_ATTN=0 says otherwise)
        block.attn.fused_attn = True
    return net, f"random-init (timm {timm.__version__} {TIMM_ARCH} at {preset.name}'s sizes)", {"timm": timm.__version__}


class _Logits(torch.nn.Module):
    """timm's model returns logits; give it the HF model's call and output (pixel_values, labels ->
    .loss, .logits) with the same loss: mean cross-entropy over the batch."""

    def __init__(self, net):
        # the HF model's own output type (a ModelOutput, which torch.compile traces)
        from transformers.modeling_outputs import ImageClassifierOutput

        super().__init__()
        self.net, self.output = net, ImageClassifierOutput

    def forward(self, pixel_values, labels):
        logits = self.net(pixel_values)
        return self.output(loss=torch.nn.functional.cross_entropy(logits, labels), logits=logits)


def _build(ref: Reference, device: str):
    """The model, optimizer and step function of `ref`; returns (step, preset, weights, fields the
    point records about the model: timm's version)."""
    torch.manual_seed(ref.seed)
    preset = model_mod.get_preset(ref.model)
    recorded = {}
    if ref.impl == "timm":
        net, weights, recorded = timm_model(preset, len(data_mod.LABELS))
        model = _Logits(net)
    else:
        model, weights = model_mod.build_model(preset, labels=data_mod.LABELS, attention="sdpa", weights="random")
    model = model.to(device)
    # AdamW maths built as the suite builds it (train.adamw), so a bare twin's optimizer is exactly its plugin's
    opt = adamw(model.parameters(), lr=ref.lr, weight_decay=ref.weight_decay, fused=ref.fused and device == "cuda")
    if ref.ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                          if device == "cuda" else None)
    fwd = torch.compile(model) if ref.compile else model
    dtype = AUTOCAST[ref.precision]  # the plain loop's map: one place says which dtype a precision autocasts to
    scaler = torch.amp.GradScaler(device) if ref.precision == "fp16" else None

    def step(batch):
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = fwd(**batch).loss
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, preset, weights, recorded


def measure_reference(ref: Reference, timing: Timing) -> dict:
    device = resolve_device(ref.device)
    step, preset, weights, recorded = _build(ref, device)
    batch = random_batch(preset, ref.batch_size, ref.seed, device)
    run = timed(step, batch, timing, device)
    mem = cuda_mem(run.warm_mem) if device == "cuda" else None
    traced = trace(step, batch, device, trace_path(timing.trace_dir, f"{ref.plugin}-bs{ref.batch_size}")) if timing.trace_dir else {}
    point = {"plugin": ref.plugin, "family": FAMILY, "precision": ref.precision, "profile": ref.profile,
             "variant": ref.variant, "model": ref.model, "attention": "sdpa", "grad_checkpoint": False,
             "compile": ref.compile, "fused_optimizer": ref.fused and device == "cuda", "ddp": ref.ddp,
             "mirrors": ref.mirrors, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
             "batch_size": ref.batch_size, "device_kind": device,
             "dataset": "synthetic-tensors (random pixels on the device)", "weights": weights} | recorded
    point |= measured_fields(run, images_per_step=ref.batch_size, timing=timing, preset=preset, mem=mem) | traced
    step = batch = run = None  # release (the step closes over model and optimizer) before emptying the cache
    release_memory()
    return point
