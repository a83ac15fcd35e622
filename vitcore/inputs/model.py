"""Named ViT presets, weight loading with a recorded source, and model FLOPs per image."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from vitcore import ConfigError
from vitcore.inputs.hub_cache import find_snapshot, repo_folder  # light: stdlib only

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a preset is fine-tuned: `vitcore train`, the bench's fine-tune study and the convergence
    tests all read it. The field names are RunConfig's, so `RunConfig(**asdict(recipe))` applies it."""

    lr: float
    weight_decay: float
    warmup_ratio: float
    """Warm-up share of all steps before the cosine decay."""
    epochs: int
    batch_size: int
    """Per data-parallel rank."""


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    recipe: Recipe
    pretrained_id: str | None = None  # the hub id whose weights `weights="auto"` looks for

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1  # patches + [CLS]

    def hf_config(self, *, num_labels: int, id2label: dict[int, str], attention: str,
                  grad_checkpoint: bool = False):
        # transformers' ViT classes add 3-5 s to an import (measured, on top of torch's 3 s); the
        # presets are read by paths that never build a model (config, memory, report).
        from transformers import ViTConfig

        cfg = ViTConfig(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                        num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
                        image_size=self.image_size, patch_size=self.patch_size, num_labels=num_labels,
                        id2label=id2label, label2id={v: k for k, v in id2label.items()})
        cfg._attn_implementation = attention
        return cfg


PRESETS = {
    p.name: p
    for p in (
        # The architecture of google/vit-base-patch16-224-in21k (ViT-B/16 at 224).
        # Its recipe is the original study's.
        ModelPreset(name="vit-base", hidden_size=768, num_layers=12, num_heads=12,
                    intermediate_size=3072, image_size=224, patch_size=16,
                    pretrained_id="google/vit-base-patch16-224-in21k",
                    recipe=Recipe(lr=3e-4, weight_decay=0.1, warmup_ratio=0.3, epochs=10, batch_size=32)),
        # Small enough to fine-tune on two CPU cores in seconds; 4 heads so tp=2 divides them.
        # Its recipe is the one the convergence threshold (vitcore.spec.checks.CONVERGENCE) was set with.
        ModelPreset(name="vit-tiny", hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, image_size=32, patch_size=8,
                    recipe=Recipe(lr=2e-3, weight_decay=0.05, warmup_ratio=0.1, epochs=10, batch_size=32)),
    )
}
ATTENTION = ("eager", "sdpa")
WEIGHTS_FORMS = ("auto (the preset's pretrained weights from the HF cache, else random init), random, "
                 "a local folder written by save_pretrained (with config.json), or a hub id already in the HF "
                 "cache (weights load offline), e.g. google/vit-base-patch16-224-in21k")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


def check_weights(weights: str) -> None:
    """Before a run starts: `weights` is one of WEIGHTS_FORMS, else a ConfigError naming it."""
    if weights in ("auto", "random"):
        return
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"weights folder {weights!r} holds no config.json; valid: {WEIGHTS_FORMS}")
        return
    if weights.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(weights):
        raise ConfigError(f"weights path {weights!r} does not exist; valid: {WEIGHTS_FORMS}")
    if hub_weights(weights) is None:
        raise ConfigError(f"weights {weights!r}: no such folder, and not in the HF cache "
                          f"({repo_folder(weights, 'model')}); valid: {WEIGHTS_FORMS}")


def hub_weights(repo_id: str):
    """The hub snapshot of `repo_id` (a vitcore.inputs.hub_cache.Snapshot) holding config.json and a weights
    file; None when the hub cache holds no snapshot of it; a ConfigError naming the folder and what is
    missing when it holds one that cannot be loaded (an interrupted download, blobs not copied)."""
    try:
        snap = find_snapshot(repo_id, "model")
    except ValueError as e:
        raise ConfigError(f"weights {repo_id!r}: {e}") from None
    if snap is None:
        return None
    if not (snap.path / "config.json").is_file():
        raise ConfigError(f"weights {repo_id!r}: hub snapshot {snap.path} holds no config.json")
    if not any((snap.path / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"weights {repo_id!r}: hub snapshot {snap.path} holds config.json but none of "
                          f"{', '.join(WEIGHT_FILES)} (an interrupted download?)")
    return snap


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(PRESETS)}") from None


def build_model(preset: ModelPreset, *, labels: list[str], attention: str = "sdpa",
                weights: str = "auto", grad_checkpoint: bool = False):
    """Return (model, weights_source). `weights`: auto | random | a local path or hub id.

    auto: the preset's pretrained weights from the HF cache (its hub snapshot) when present, otherwise
    random initialisation, logged as a warning and recorded in the source string. A local folder or
    hub snapshot that is present but cannot be loaded is a ConfigError, never random weights.
    """
    from transformers import ViTForImageClassification  # 3-5 s; see hf_config

    if attention not in ATTENTION:
        raise ConfigError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTION)}")
    check_weights(weights)
    id2label = dict(enumerate(labels))
    config = preset.hf_config(num_labels=len(labels), id2label=id2label, attention=attention)
    if weights == "random" or (weights == "auto" and preset.pretrained_id is None):
        model = ViTForImageClassification(config)
        source = "random-init" + ("" if weights == "random" else f" ({preset.name} has no pretrained weights)")
    else:
        target, source = _weights_folder(preset, weights)
        if target is None:
            model = ViTForImageClassification(config)
            log.warning("WEIGHTS: %s; using the same architecture RANDOMLY INITIALISED", source)
            source = f"random-init ({source})"
        else:
            try:
                model, info = ViTForImageClassification.from_pretrained(
                    target, local_files_only=True, num_labels=len(labels), id2label=id2label,
                    label2id=config.label2id, ignore_mismatched_sizes=True, attn_implementation=attention,
                    output_loading_info=True)
            except Exception as e:  # noqa: BLE001 - any failure to read the user's files (a corrupt
                # safetensors header is a SafetensorError, a torn .bin a RuntimeError): one line, never
                # a traceback, never random weights
                raise ConfigError(f"weights {source}: {_named_file(Path(target))} cannot be loaded "
                                  f"({_first_line(e)}); {REWRITE}") from None
            _check_architecture(model.config, preset)
            _check_loaded(info, target, preset)
            if _head_kept(info) and _folder_labels(Path(target)) != list(labels):
                # a head of the same shape trained for other classes: fine-tuning starts from a fresh one
                model._init_weights(model.classifier)
                source += " (classifier re-initialised: the checkpoint's labels are not the dataset's)"
    if grad_checkpoint:
        model.gradient_checkpointing_enable()
    return model, source


def _weights_folder(preset: ModelPreset, weights: str) -> tuple[str | None, str]:
    """(the folder to load, the weights source naming it). A local folder as given; a hub id (the
    preset's for auto) from its hub snapshot. Folder None: auto without the preset's weights in the
    HF cache, and the source says so."""
    if weights != "auto":
        path = Path(weights).expanduser()
        if path.exists():
            name = standin_name(path)
            return str(path), f"pretrained:{weights}" + (f" ({name}: {STANDIN_NOTE})" if name else "")
    repo_id = preset.pretrained_id if weights == "auto" else weights
    snap = hub_weights(repo_id)
    if snap is None:
        return None, f"{repo_id} not in the HF cache ({repo_folder(repo_id, 'model')})"
    return str(snap.path), f"pretrained:{snap}"


# The suite's own pretrained checkpoint (vitcore.training.pretrain, docs/data.md): a folder that
# holds this provenance file is a stand-in, and every result's weights field says so by its name.
STANDIN_FILE = "vitcore-standin.json"
STANDIN_NOTE = "the suite's stand-in for google/vit-base-patch16-224-in21k, not its weights"


def standin_name(folder: Path) -> str | None:
    """The stand-in's name from its provenance file, None for a folder without one; a provenance
    file that cannot be read is a ConfigError naming it (a result must never lose the label)."""
    path = Path(folder) / STANDIN_FILE
    if not path.exists():
        return None
    try:
        name = json.loads(path.read_text())["name"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"weights provenance {path} cannot be read ({_first_line(e)}); {REWRITE}") from None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"weights provenance {path} has no name (got {name!r}); {REWRITE}")
    return name


def _head_kept(info: dict) -> bool:
    """from_pretrained loaded the classifier from the file (it was neither missing nor of another shape)."""
    keys = [k if isinstance(k, str) else k[0] for key in ("mismatched_keys", "missing_keys") for k in info.get(key) or []]
    return not any(k.startswith(CLASSIFIER) for k in keys)


def _folder_labels(folder: Path) -> list[str] | None:
    try:
        id2label = json.loads((folder / "config.json").read_text()).get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)]
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _check_architecture(cfg, preset: ModelPreset, where: str = "weights") -> None:
    # intermediate_size too: from_pretrained builds the model from the folder's config, not the preset's
    got = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, cfg.image_size,
           cfg.patch_size)
    want = (preset.hidden_size, preset.num_layers, preset.num_heads, preset.intermediate_size, preset.image_size,
            preset.patch_size)
    if got != want:
        raise ConfigError(f"{where}: architecture {got} (hidden, layers, heads, intermediate, image, patch), "
                          f"preset {preset.name!r} expects {want}")


# --- the files of a weights folder, read before anything launches ----------------------------------
# A corrupt model.safetensors used to surface as a 37-line traceback from inside the training
# process, and a tensor of another shape was silently re-initialised (ignore_mismatched_sizes, which
# exists for the classifier alone). Only headers are read here: safe_open parses the header and
# checks that the data it describes is all there; a .bin is unpickled onto the meta device.
REWRITE = "write the folder again with save_pretrained, or pass --weights random"
CLASSIFIER = "classifier."  # re-initialised for the dataset's labels: its shape may differ


def check_weights_files(weights: str, preset: ModelPreset) -> None:
    """The folder `weights` loads from (a local folder, a hub snapshot, auto's snapshot where cached)
    holds a config.json transformers reads as a ViT of the preset's architecture and a weights file
    whose header parses and whose tensors have the preset's names and shapes (the classifier aside).
    Each problem is a ConfigError naming the file. Imports torch and transformers' ViT (~5 s), not
    colossalai; a no-op for random weights and for auto without a cached snapshot."""
    if weights == "random" or (weights == "auto" and preset.pretrained_id is None):
        return
    target, _ = _weights_folder(preset, weights)
    if target is None:
        return
    folder = Path(target)
    _check_architecture(_read_config(folder), preset, f"weights config {folder / 'config.json'}")
    path, shapes = _checkpoint_shapes(folder)
    expected = _expected_shapes(preset)
    missing = sorted(set(expected) - set(shapes))
    if len(missing) == len(expected):
        raise ConfigError(f"weights file {path} holds none of the ViT's tensors (e.g. {missing[0]}): it is "
                          f"not a ViT checkpoint; {REWRITE}")
    if missing:
        raise ConfigError(f"weights file {path} lacks {len(missing)} of the {len(expected)} tensors of preset "
                          f"{preset.name!r} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); {REWRITE}")
    wrong = [f"{k} {shapes[k]} in the file, {expected[k]} expected" for k in sorted(expected) if shapes[k] != expected[k]]
    if wrong:
        raise ConfigError(f"weights file {path}: {len(wrong)} tensor(s) do not have the shapes of preset "
                          f"{preset.name!r} ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})")


def _read_config(folder: Path):
    """config.json as transformers reads it, else a ConfigError naming it and why."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"weights config {path} cannot be read ({_first_line(e)}); {REWRITE}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"weights config {path}:{e.lineno} is not valid JSON ({e.msg}); {REWRITE}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"weights config {path} holds a JSON {type(raw).__name__}, not a model config")
    if raw.get("model_type") != "vit":
        raise ConfigError(f"weights config {path} is of model_type {raw.get('model_type')!r}, not a ViT ('vit'); "
                          f"valid: {WEIGHTS_FORMS}")
    # transformers / safetensors: only when a model or weights file is read
    from transformers import ViTConfig

    try:
        return ViTConfig.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - whatever transformers objects to, in one line
        raise ConfigError(f"weights config {path} cannot be read by transformers ({_first_line(e)})") from None


def _checkpoint_shapes(folder: Path) -> tuple[Path, dict[str, tuple]]:
    """(the weights file transformers would load, {tensor name: shape}) from headers only; names
    without the `vit.` prefix (a ViTModel checkpoint has none, ViTForImageClassification's has it).
    transformers' order: model.safetensors, its index, pytorch_model.bin, its index."""
    order = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    path = next((folder / f for f in order if (folder / f).is_file()), None)
    if path is None:
        raise ConfigError(f"weights folder {folder} holds config.json but no weights file (none of "
                          f"{', '.join(order)}); {REWRITE}")
    files = [path]
    if path.name.endswith(".index.json"):
        try:
            files = [folder / f for f in dict.fromkeys(json.loads(path.read_text())["weight_map"].values())]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"weights index {path} has no readable weight_map ({_first_line(e)}); {REWRITE}") from None
    shapes = {}
    for f in files:
        shapes |= _file_shapes(f)
    return path, {k.removeprefix("vit."): v for k, v in shapes.items()}


def _file_shapes(path: Path) -> dict[str, tuple]:
    if not path.is_file():
        raise ConfigError(f"weights file {path} is missing (named by the folder's index); {REWRITE}")
    if path.stat().st_size == 0:
        raise ConfigError(f"weights file {path} is empty (0 bytes: an interrupted copy?); {REWRITE}")
    try:
        if path.suffix == ".safetensors":
            # transformers / safetensors: only when a model or weights file is read
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        # torch: imported where it is used, so that importing this module (and the CLI) stays light
        import torch

        state = torch.load(path, map_location="meta", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    except Exception as e:  # noqa: BLE001 - SafetensorError, UnpicklingError, RuntimeError, AttributeError...
        raise ConfigError(f"weights file {path} is corrupt or truncated ({_first_line(e)}); {REWRITE}") from None


def _expected_shapes(preset: ModelPreset) -> dict[str, tuple]:
    """The preset's tensors as build_model makes them (on the meta device: no memory, no init), the
    classifier aside."""
    # torch: imported where it is used, so that importing this module (and the CLI) stays light
    import torch

    # transformers / safetensors: only when a model or weights file is read
    from transformers import ViTForImageClassification

    cfg = preset.hf_config(num_labels=2, id2label={0: "a", 1: "b"}, attention="eager")
    with torch.device("meta"):
        model = ViTForImageClassification(cfg)
    return {k.removeprefix("vit."): tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith(CLASSIFIER)}


def _check_loaded(info: dict, target: str, preset: ModelPreset) -> None:
    """After from_pretrained: a tensor missing from the file or of another shape would train from a
    random init with a warning only; the classifier alone may be re-initialised."""
    def names(key):  # transformers lists names (4.51) or (name, shapes) tuples (older)
        keys = [k if isinstance(k, str) else k[0] for k in info.get(key) or []]
        return [k for k in keys if not k.startswith(CLASSIFIER)]

    for key, what in (("mismatched_keys", "have other shapes than"), ("missing_keys", "are missing for")):
        bad = names(key)
        if bad:
            raise ConfigError(f"weights {_named_file(Path(target))}: {len(bad)} tensor(s) {what} preset "
                              f"{preset.name!r} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); {REWRITE}")


def _named_file(folder: Path) -> Path:
    """The weights file of a folder (for messages), else the folder."""
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), folder)


def _first_line(e: BaseException, limit: int = 160) -> str:
    """The upstream error's type and first line (torch's can run to 300 characters)."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def forward_flops_per_image(preset: ModelPreset, num_labels: int = 3) -> int:
    """Matrix-product FLOPs of one forward pass for one image (2 per multiply-add).

    Patch embedding, per layer QKV / scores / attention x V / output / MLP, and the classifier.
    Softmax, norms and activations are ignored (a fraction of a percent for ViT-B).
    """
    n, h, i = preset.num_tokens, preset.hidden_size, preset.intermediate_size
    patch_dim = 3 * preset.patch_size**2
    embed = 2 * (n - 1) * patch_dim * h
    per_layer = 2 * n * h * 3 * h + 2 * 2 * n * n * h + 2 * n * h * h + 2 * 2 * n * h * i
    return embed + preset.num_layers * per_layer + 2 * h * num_labels


def train_flops_per_image(preset: ModelPreset, num_labels: int = 3) -> int:
    """A training step is counted as 3x forward (backward = 2x); recomputation is not counted."""
    return 3 * forward_flops_per_image(preset, num_labels)
