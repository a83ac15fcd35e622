"""Pretrained weights through a plugin (issue 30): do they survive booster.boost, and does
fine-tuning from them transfer?

A plugin that re-initialises, re-casts or re-shards parameters (lazy init, shardformer's module
replacement, ZeRO's master copies) could discard the checkpoint's weights and still pass every
random-init test. `boost_and_check` builds a session through the plugin from `--weights FOLDER`,
gathers the boosted model's state dict through the plugin's own checkpoint IO (booster.save_model,
unsharded: DDP's module.state_dict, shardformer's tp/pp gather, Gemini's chunk gather) and
`check_survival` compares every tensor but the classifier with the checkpoint's file: exact where
the plugin holds fp32, within the cast (round to nearest) where it holds bf16 / fp16. The
classifier must be freshly initialised with the fine-tuning label count. A stand-in's file is first
checked against the SHA-256 of each tensor its provenance recorded at save time, so a checkpoint
altered after saving is caught too, by the tensor's name.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from vitcore import ConfigError
from vitcore.inputs import data as data_mod
from vitcore.inputs import photos
from vitcore.spec.checks import CheckFailed
from vitcore.training import train
from vitcore.training.pretrain import read_provenance, tensor_sha256

HEAD = "classifier."
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / FSDP wrappers, torch.compile
INNER_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")  # anywhere in a name (nested wrapping)
# unit roundoff of round-to-nearest: |cast(x) - x| <= U * |x| (bf16: 8 significand bits, fp16: 11);
# fp16's subnormals (below 2^-14) are spaced 2^-24 apart, so a cast there is off by up to 2^-25
CAST = {torch.float32: (0.0, 0.0), torch.bfloat16: (2.0 ** -8, 0.0), torch.float16: (2.0 ** -11, 2.0 ** -25)}
PRECISION_DTYPES = {"fp32": (torch.float32,), "bf16": (torch.float32, torch.bfloat16),
                    "fp16": (torch.float32, torch.float16)}
INIT_STD = (0.5, 2.0)  # a fresh head's weight std, as a multiple of config.initializer_range (HF's init)
SHOWN = 3  # mismatches named in the one-line verdict


@dataclass
class Survival:
    """The verdict of check_survival; `mismatches` are "tensor: why", integrity ones first."""

    checkpoint: str
    name: str | None  # the stand-in's name; None for another checkpoint (in21k)
    precision: str
    compared: int = 0
    exact: int = 0  # tensors bit-equal to the checkpoint's
    dtypes: list[str] = field(default_factory=list)
    max_abs: float = 0.0
    integrity: str = ""
    head: str = ""
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.compared > 0

    def __str__(self):
        what = f"{self.name or self.checkpoint} through {self.precision}"
        if self.ok:
            return (f"{what}: {self.compared} tensors survived boosting ({self.exact} bit-exact, max |diff| "
                    f"{self.max_abs:.3g}, dtypes {'/'.join(self.dtypes)}); {self.integrity}; head {self.head}")
        more = f" (and {len(self.mismatches) - SHOWN} more)" if len(self.mismatches) > SHOWN else ""
        return (f"{what}: {len(self.mismatches)} tensor(s) did not survive: "
                f"{'; '.join(self.mismatches[:SHOWN])}{more}")


def require_survival(s: Survival) -> Survival:
    if not s.ok:
        raise CheckFailed(str(s) if s.mismatches else f"{s.checkpoint}: no tensor was compared")
    return s


def checkpoint_name(name: str) -> str:
    """A state-dict key without wrappers' prefixes and ViTForImageClassification's `vit.`."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    for inner in INNER_WRAPPERS:
        name = name.replace(inner, "")
    return name.removeprefix("vit.")


def checkpoint_tensors(folder) -> dict[str, torch.Tensor]:
    """The tensors of a save_pretrained folder's weights file(s), keys as written (transformers' order)."""
    folder = Path(folder)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        files = [folder / single] if (folder / single).is_file() else []
        if not files and (folder / index).is_file():
            files = [folder / f for f in dict.fromkeys(json.loads((folder / index).read_text())["weight_map"].values())]
        if files:
            out = {}
            for f in files:
                out |= _read(f)
            return out
    raise ConfigError(f"weights folder {folder} holds no weights file (model.safetensors or pytorch_model.bin)")


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            # safetensors: only for a .safetensors file (an in21k copy may hold pytorch_model.bin alone)
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file of any kind: one line naming it
        raise ConfigError(f"weights file {path} cannot be read ({type(e).__name__}: {e})") from None


def integrity(raw: dict[str, torch.Tensor], provenance: dict | None) -> tuple[str, list[str]]:
    """The file's tensors against the SHA-256 recorded at save time: (summary, mismatches)."""
    if provenance is None:
        return "no provenance file: the file itself is the reference", []
    recorded = provenance["tensors"]
    bad = [f"{k}: in the checkpoint file but not in its provenance" for k in sorted(set(raw) - set(recorded))]
    bad += [f"{k}: missing from the checkpoint file (its provenance records it)" for k in sorted(set(recorded) - set(raw))]
    bad += [f"{k}: the checkpoint file's tensor differs from the one saved (sha256 {tensor_sha256(raw[k])[:12]}, "
            f"provenance {recorded[k]['sha256'][:12]}): altered after saving"
            for k in sorted(set(raw) & set(recorded)) if tensor_sha256(raw[k]) != recorded[k]["sha256"]]
    return f"{len(recorded)} file tensors equal the fingerprints saved by {provenance['name']}", bad


def check_survival(state: dict[str, torch.Tensor], folder, *, precision: str, num_labels: int) -> Survival:
    """Every non-head tensor of the boosted model's gathered `state` against the checkpoint in
    `folder` (exact for fp32, within the cast for bf16 / fp16); the head fresh, of num_labels rows."""
    if precision not in PRECISION_DTYPES:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISION_DTYPES)}")
    provenance = read_provenance(folder)
    raw = checkpoint_tensors(folder)
    out = Survival(checkpoint=str(folder), name=provenance and provenance["name"], precision=precision)
    out.integrity, out.mismatches = integrity(raw, provenance)
    ref = {checkpoint_name(k): v for k, v in raw.items()}
    got = {checkpoint_name(k): v for k, v in state.items()}
    dtypes = set()
    for k in sorted(got):
        if k.startswith(HEAD):
            continue
        g = got[k].detach().cpu()
        if k not in ref:
            out.mismatches.append(f"{k}: not in the checkpoint")
            continue
        r = ref[k].detach().cpu()
        dtypes.add(str(g.dtype).removeprefix("torch."))
        out.compared += 1
        why = _differs(g, r, precision)
        if why:
            out.mismatches.append(f"{k}: {why}")
            continue
        diff = float((g.double() - r.double()).abs().max()) if g.numel() else 0.0
        out.max_abs = max(out.max_abs, diff)
        out.exact += int(diff == 0.0 and g.dtype == r.dtype)
    out.mismatches += [f"{k}: in the checkpoint, not in the boosted model" for k in sorted(set(ref) - set(got))
                       if not k.startswith(HEAD) and not k.startswith("pooler.")]  # in21k's ViTModel has a pooler
    out.dtypes = sorted(dtypes)
    out.head, head_bad = _check_head(got, ref, folder, num_labels)
    out.mismatches += head_bad
    return out


def _differs(g: torch.Tensor, r: torch.Tensor, precision: str) -> str | None:
    """Why the boosted tensor `g` is not the checkpoint's `r` in this precision, or None."""
    if tuple(g.shape) != tuple(r.shape):
        return f"shape {tuple(g.shape)}, checkpoint {tuple(r.shape)}"
    if g.dtype not in PRECISION_DTYPES[precision]:
        return f"held as {str(g.dtype).removeprefix('torch.')} in a {precision} run"
    # The run's precision sets the tolerance, not the dtype handed back: Gemini's state dict returns
    # its bf16 / fp16 working copy upcast to float32 (measured on an H200: float32 tensors whose
    # values lie on the bf16 grid), which an exact fp32 comparison would call lost weights.
    low = PRECISION_DTYPES[precision][-1]
    rtol, atol = CAST[low]
    gd, rd = g.double(), r.double()
    err = (gd - rd).abs()
    bad = ~(err <= rtol * rd.abs() + atol)  # NaN fails too
    if not bool(bad.any()):
        return None
    i = int(bad.flatten().nonzero()[0])
    kind = "exact (fp32)" if low == torch.float32 else f"within the {str(low).removeprefix('torch.')} cast"
    return (f"{int(bad.sum())} of {g.numel()} values differ beyond {kind}, first at flat index {i}: "
            f"{float(gd.flatten()[i]):.9g} vs {float(rd.flatten()[i]):.9g}")


def _check_head(got: dict, ref: dict, folder, num_labels: int) -> tuple[str, list[str]]:
    w, b = got.get(HEAD + "weight"), got.get(HEAD + "bias")
    if w is None or b is None:
        return "missing", [f"{HEAD}weight/bias: not in the boosted model"]
    w, b = w.detach().cpu().double(), b.detach().cpu().double()
    bad = []
    if w.shape[0] != num_labels or b.shape != (num_labels,):
        bad.append(f"{HEAD}weight: shape {tuple(w.shape)}, expected {num_labels} rows (the fine-tuning label count)")
    old = ref.get(HEAD + "weight")
    if old is not None and tuple(old.shape) == tuple(w.shape) and torch.allclose(old.double(), w, rtol=1e-2, atol=1e-6):
        bad.append(f"{HEAD}weight: equals the checkpoint's head, not freshly initialised")
    if bool(b.abs().max() > 0):
        bad.append(f"{HEAD}bias: max |value| {float(b.abs().max()):.3g}, a fresh head's bias is 0")
    std, want = float(w.std()), _initializer_range(folder)
    if not INIT_STD[0] * want <= std <= INIT_STD[1] * want:
        bad.append(f"{HEAD}weight: std {std:.4g}, a fresh head's is about {want:g} (initializer_range)")
    return f"fresh ({tuple(w.shape)}, std {std:.4f}, bias 0)" if not bad else "not fresh", bad


def _initializer_range(folder) -> float:
    try:
        return float(json.loads((Path(folder) / "config.json").read_text()).get("initializer_range", 0.02))
    except (OSError, ValueError, TypeError):
        return 0.02


def gathered_state(s: train.Session) -> dict[str, torch.Tensor] | None:
    """The boosted model's full state dict through the plugin's own checkpoint IO (unsharded
    booster.save_model, which gathers tp / pp / ZeRO shards to the first rank). Every rank must
    call it; rank 0 gets the tensors, the others None."""
    with tempfile.TemporaryDirectory(prefix="vitcore-survival-") as tmp:
        path = Path(tmp) / "model.bin"
        s.booster.save_model(s.model, str(path), shard=False)
        dist.barrier()
        if dist.get_rank() != 0:
            return None
        if not path.is_file():
            raise CheckFailed(f"{s.cfg.plugin}: booster.save_model wrote no file on rank 0 ({path})")
        return torch.load(path, map_location="cpu", weights_only=True)


def boost_and_check(cfg, data=None) -> dict:
    """Runs on every rank (launch.run): the session through the plugin from cfg.weights, then the
    survival check of its gathered state (rank 0's verdict; the others return their rank)."""
    s = train.setup(cfg, data, synthetic_batch=data is None)
    state = gathered_state(s)
    if dist.get_rank() != 0:
        return {"rank": dist.get_rank()}
    labels = data.labels if data is not None else data_mod.LABELS  # setup's labels for the synthetic batch
    verdict = check_survival(state, cfg.weights, precision=cfg.precision, num_labels=len(labels))
    return train.describe(s) | {"survival": asdict(verdict), "survived": verdict.ok, "verdict": str(verdict)}


def survival_from(result: dict) -> Survival:
    return Survival(**result["survival"])


# --- transfer: fine-tuning from the stand-in vs from random initialisation -------------------------
# The held-out classes (photos.FINETUNE_CLASSES: pullover / coat / shirt), 250 train and 256 test
# photos each (768 test images: whole batches of 32, which colossalai's pipeline schedule requires); the tiny preset's learning rate and weight decay over 4 epochs (the issue's "within 4
# epochs") with the study's 30% warm-up: at the preset's 10% the first full-rate steps under a random
# head wrecked the stand-in's features on some seeds (seed 44: 0.576 from the stand-in, 0.569 from
# random; with 30% 0.657 and 0.565). Measured by scripts/transfer_thresholds.py, which records the
# thresholds it sets in fixtures/transfer-thresholds.json (spec.checks.transfer_threshold).
TRANSFER_DATA = dict(train_per_class=250, test_per_class=256)
TRANSFER_RECIPE = dict(model="vit-tiny", lr=2e-3, weight_decay=0.05, warmup_ratio=0.3, epochs=4, batch_size=32)


def transfer_data(src=None):
    """The fine-tuning side: Fashion-MNIST's FINETUNE_CLASSES, none of which the stand-in saw."""
    return photos.load_classes(photos.FINETUNE_CLASSES, TRANSFER_DATA["train_per_class"],
                               TRANSFER_DATA["test_per_class"], src=src)
