"""The dog_food dataset: a hub id, a local folder, or the embedded generated default.

Every loader returns a DogFood whose `source` string says exactly which form was used; it goes into
every result and report. A hub id (`lewtun/dog_food`, or any other) is looked up in this order:
  1. the datasets library: the hub when reachable, else its prepared cache (`hf-hub:` /
     `hf-datasets-cache:ID (FOLDER)`);
  2. with the hub unreachable or HF_HUB_OFFLINE set: the hub snapshot that `huggingface-cli download`
     or a copied hub cache leaves, its data files loaded directly (`hf-snapshot:ID@REV (FOLDER)`).
A path is a save_to_disk folder (`local-disk:`) or an image folder (`local-imagefolder:`).
Asking for the real dataset never falls back silently: `auto` falls back to the embedded data with a
warning and says so in `source`; an explicit id or path that is unavailable or incomplete is an error
naming what was tried or what is missing. Every image of a real dataset is decoded in full once when
it is loaded (a truncated JPEG passes PIL's verify() and fails only when its pixels are read), and
the files that decoded are remembered by path, size and mtime in the user cache, so a re-run is instant.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import ViTImageProcessor

from vitcore import DataError
from vitcore.files import cache_dir, write_json
from vitcore.inputs import hub_cache

log = logging.getLogger(__name__)

HUB_ID = "lewtun/dog_food"
LABELS = ["chicken", "dog", "muffin"]
SPLIT_SIZES = {"train": 2250, "test": 750}  # lewtun/dog_food; the embedded default mirrors them
EMBEDDED = "embedded"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class DogFood:
    train: object  # datasets.Dataset with features image (Image) and label (ClassLabel)
    test: object
    labels: list[str]
    source: str


# --- subsets --------------------------------------------------------------------------------------
def stratified_indices(labels, n: int, seed: int = 0) -> list[int]:
    """n indices whose class counts are proportional to `labels` (largest remainder), sorted.

    Deterministic for a given seed; every class present keeps at least one sample when n allows.
    """
    labels = np.asarray(labels)
    if not 1 <= n <= len(labels):
        raise DataError(f"subset {n} is out of range; valid: 1..{len(labels)}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - take), kind="stable")[: n - take.sum()]:
        take[c] += 1
    rng = np.random.default_rng(seed)
    out = []
    for c, k in zip(classes, take, strict=True):
        idx = np.flatnonzero(labels == c)
        out += rng.choice(idx, size=k, replace=False).tolist()
    return sorted(out)


def test_subset_size(train_n: int, test_len: int, num_classes: int) -> int:
    """Keep dog_food's 3:1 train:test ratio for subsets."""
    return min(test_len, max(num_classes, math.ceil(train_n / 3)))


# --- the embedded default ------------------------------------------------------------------------
EMBEDDED_VERSION = 1


def _embedded_labels(split: str, seed: int) -> np.ndarray:
    n = SPLIT_SIZES[split]
    rng = np.random.default_rng([seed, EMBEDDED_VERSION, 0 if split == "train" else 1])
    return rng.permutation(np.arange(n) % len(LABELS))  # balanced, shuffled


def embedded_image(label: int, split: str, index: int, seed: int = 0):
    """One deterministic synthetic image.

    Each class is an oriented texture: chicken = near-horizontal stripes, dog = near-vertical
    stripes, muffin = a checkerboard of dots; colours, frequency, phase, the textured region and
    the image size and aspect ratio are random and noise is added, so class is not in the mean
    colour and a model has to learn orientation from patches.
    """
    rng = np.random.default_rng([seed, EMBEDDED_VERSION, 0 if split == "train" else 1, index])
    w, h = (int(v) for v in rng.integers(48, 192, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = min(w, h) / rng.uniform(2.5, 5.0)
    phase = rng.uniform(0, 2 * np.pi)
    if label == 2:
        wave = np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period + phase)
    else:
        theta = np.deg2rad((0.0 if label == 0 else 90.0) + rng.uniform(-25, 25))
        wave = np.sin(2 * np.pi * (xx * np.sin(theta) + yy * np.cos(theta)) / period + phase)
    fg, bg, base = (rng.uniform(0, 255, size=3) for _ in range(3))
    mix = (wave[..., None] > 0).astype(np.float32)
    img = mix * fg + (1 - mix) * bg
    # The texture covers a random box; the rest is a flat background of a third colour.
    x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
    x1, y1 = int(rng.integers(2 * w // 3, w + 1)), int(rng.integers(2 * h // 3, h + 1))
    out = np.broadcast_to(base, img.shape).copy()
    out[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    out += rng.normal(0, 40, size=out.shape)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def load_embedded(*, subset: int | None = None, seed: int = 0) -> DogFood:
    """The generated stand-in with dog_food's schema and split sizes; only the rows used are drawn."""
    splits = {}
    n_train = subset
    for split in ("train", "test"):
        labels = _embedded_labels(split, seed)
        idx = np.arange(len(labels))
        if subset is not None:
            n = n_train if split == "train" else test_subset_size(n_train, len(labels), len(LABELS))
            idx = stratified_indices(labels, n, seed)
        rows = {"image": [embedded_image(int(labels[i]), split, int(i), seed) for i in idx],
                "label": [int(labels[i]) for i in idx]}
        splits[split] = datasets.Dataset.from_dict(rows, features=_features())
    tag = f"{EMBEDDED}:synthetic-dog-food-v{EMBEDDED_VERSION}(seed={seed})"
    return DogFood(splits["train"], splits["test"], list(LABELS), tag + _subset_tag(subset))


def _features():
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=LABELS)})


def _subset_tag(subset):
    return "" if subset is None else f" subset={subset}"


# --- the real dataset -----------------------------------------------------------------------------
def load(dataset: str = "auto", *, subset: int | None = None, seed: int = 0) -> DogFood:
    """dataset: auto | embedded | lewtun/dog_food | a local folder (image folder or save_to_disk)."""
    if dataset == EMBEDDED:
        return load_embedded(subset=subset, seed=seed)
    if dataset == "auto":
        try:
            data = _load_hub(HUB_ID)
        except DataError as e:
            log.warning("DATASET: %s; using the EMBEDDED synthetic stand-in", e)
            d = load_embedded(subset=subset, seed=seed)
            d.source += f" ({HUB_ID} not available offline)"
            return d
    elif dataset.startswith(("/", ".", "~")) or Path(dataset).exists():
        data = _load_local(Path(dataset).expanduser())
    else:
        data = _load_hub(dataset)
    return _subset(data, subset, seed)


def _load_hub(repo_id: str) -> DogFood:
    """In the lookup order at the top (vitcore.inputs.hub_cache.load_hub_dataset)."""
    dd, source = hub_cache.load_hub_dataset(repo_id)
    return _checked(dd, source)


def _load_local(path: Path) -> DogFood:
    if not path.exists():
        raise DataError(f"dataset path {str(path)!r} does not exist; give an image folder "
                        f"({'/'.join(LABELS)}/ or train/ and test/ of them), a save_to_disk folder, "
                        f"'embedded' or '{HUB_ID}'")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        _check_saved(path)
        dd = datasets.load_from_disk(str(path))
        return _checked(dd, f"local-disk:{path}")
    files = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise DataError(f"dataset path {str(path)!r} holds no images and no save_to_disk dataset")
    classes = sorted({f.parent.name for f in files} - {"train", "test", "validation"})
    if len(classes) < 2:  # imagefolder would load one folder without a label column
        raise DataError(f"dataset local-imagefolder:{path} has {len(classes)} class folder(s) {classes}; "
                        "a classifier needs at least 2")
    _verify_images(files)
    with hub_cache.no_progress_bars():  # an error after it would not be the one line on stderr
        dd = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(hub_cache.datasets_cache_dir()))
    # A folder of photographs of any classes (issue 15: the convergence check on the user's own
    # photos); the hub dataset and save_to_disk copies keep dog_food's exact schema.
    return _from_dict(dd, f"local-imagefolder:{path}", any_labels=True)


def _check_saved(path: Path) -> None:
    """A save_to_disk folder holds every split dataset_dict.json lists, each with the files its
    state.json lists; else one line naming the first file missing."""
    try:
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"] \
            if (path / "dataset_dict.json").exists() else [""]
        for split in splits:
            state = path / split / "state.json"
            if not state.is_file():
                raise DataError(f"save_to_disk folder {path} is incomplete: {state.relative_to(path)} is missing")
            for f in json.loads(state.read_text())["_data_files"]:
                if not (path / split / f["filename"]).is_file():
                    raise DataError(f"save_to_disk folder {path} is incomplete: "
                                    f"{(path / split / f['filename']).relative_to(path)} is missing")
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"save_to_disk folder {path} has an unreadable dataset_dict.json or state.json: "
                        f"{type(e).__name__}: {e}") from None


def _checked(dd, source: str) -> DogFood:
    """A DatasetDict (or Dataset) as DogFood, its schema checked, then every image decoded once."""
    data = _from_dict(dd, source)
    _verify_rows(dd if isinstance(dd, datasets.DatasetDict) else {"train": dd}, source)
    return data


def _from_dict(dd, source: str, *, any_labels: bool = False) -> DogFood:
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    if "train" not in dd:
        raise DataError(f"dataset {source} has splits {list(dd)}; expected 'train' (and 'test')")
    if "label" not in dd["train"].features or "image" not in dd["train"].features:
        raise DataError(f"dataset {source} has columns {list(dd['train'].features)}; "
                        "expected 'image' and 'label'")
    feat = dd["train"].features["label"]
    labels = list(getattr(feat, "names", []) or [])
    if not any_labels and labels != LABELS:
        raise DataError(f"dataset {source} has labels {labels}; dog_food needs {LABELS}")
    if "test" not in dd:
        # A single split (an image folder without train/test): a deterministic stratified 3:1 split.
        full = dd["train"]
        test = set(stratified_indices(full["label"], max(len(labels), round(len(full) / 4)), seed=0))
        train = [i for i in range(len(full)) if i not in test]
        return DogFood(full.select(train), full.select(sorted(test)), labels,
                       source + " (test = stratified 25% of train)")
    return DogFood(dd["train"], dd["test"], labels, source)


def _subset(data: DogFood, subset: int | None, seed: int) -> DogFood:
    if subset is None:
        return data
    tr = stratified_indices(data.train["label"], subset, seed)
    n_test = test_subset_size(subset, len(data.test), len(data.labels))
    te = stratified_indices(data.test["label"], n_test, seed)
    return DogFood(data.train.select(tr), data.test.select(te), data.labels, data.source + _subset_tag(subset))


# --- every image decoded once ----------------------------------------------------------------------
DECODED_CACHE = "decoded-images.json"  # in the user cache: files whose every image decoded in full


class _Decoded:
    """Files (image files, or a dataset's Arrow files) whose every image decoded in full, by path
    with size and mtime: a changed file is decoded again."""

    def __init__(self):
        self.path = cache_dir(DECODED_CACHE)
        try:
            self.known = json.loads(self.path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.known = {}
        self.new = {}

    def ok(self, f) -> bool:
        return self.known.get(os.path.abspath(f)) == _stamp(f)

    def add(self, f) -> None:
        self.new[os.path.abspath(f)] = _stamp(f)

    def save(self) -> None:
        if self.new:  # entries of files since removed (test folders) are dropped
            kept = {f: v for f, v in self.known.items() if os.path.exists(f)}
            write_json(self.path, {"files": kept | self.new})


def _stamp(f) -> list[int]:
    st = os.stat(f)
    return [st.st_size, st.st_mtime_ns]


def _decode_fully(src, name: str) -> None:
    """verify() (structure, PNG checksums), then load() (every pixel: a truncated JPEG fails here)."""
    try:
        with Image.open(src) as im:
            im.verify()
        if hasattr(src, "seek"):
            src.seek(0)
        with Image.open(src) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; all mean "corrupt"
        raise DataError(f"corrupt image file {name!r}: {e}") from None


def _verify_images(files) -> None:
    decoded = _Decoded()
    try:
        for f in sorted(files):
            if not decoded.ok(f):
                _decode_fully(f, str(f))
                decoded.add(f)
    finally:
        decoded.save()


def _verify_rows(dd, source: str) -> None:
    """Every image of every split, unless the split's Arrow files decoded in full before."""
    decoded = _Decoded()
    try:
        for split, ds in dd.items():
            files = [c["filename"] for c in ds.cache_files]
            if files and all(decoded.ok(f) for f in files):
                continue
            for i, row in enumerate(ds.cast_column("image", datasets.Image(decode=False))):
                img = row["image"] or {}
                where = f" ({img['path']})" if img.get("path") else ""
                _decode_fully(io.BytesIO(img["bytes"]) if img.get("bytes") else img.get("path"),
                              f"{source} {split} row {i}{where}")
            for f in files:
                decoded.add(f)
    finally:
        decoded.save()


def split_sizes(dataset: str = "auto", *, subset: int | None = None) -> tuple[int, int]:
    """The (train, test) sizes `load` gives, checked as `load` checks them (every image of a real
    dataset decoded once), for checks made before a run starts. The embedded data is not drawn;
    `auto` without the hub dataset answers for the embedded one quietly (the run warns when it loads)."""
    if dataset == "auto":
        try:
            data = _load_hub(HUB_ID)
        except DataError:
            dataset = EMBEDDED
        else:
            d = _subset(data, subset, 0)
            return len(d.train), len(d.test)
    if dataset == EMBEDDED:
        n_train, n_test = SPLIT_SIZES["train"], SPLIT_SIZES["test"]
        if subset is None:
            return n_train, n_test
        if not 1 <= subset <= n_train:
            raise DataError(f"subset {subset} is out of range; valid: 1..{n_train}")
        return subset, test_subset_size(subset, n_test, len(LABELS))
    d = load(dataset, subset=subset)
    return len(d.train), len(d.test)


# --- preprocessing --------------------------------------------------------------------------------
def image_processor(image_size: int):
    """The ViT image processor settings of google/vit-base-patch16-224-in21k, at `image_size`."""
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, do_resize=True,
                             do_rescale=True, do_normalize=True, image_mean=[0.5] * 3,
                             image_std=[0.5] * 3)


class Preprocessed:
    """A torch map-style dataset: decoded, resized, normalised pixel tensors and labels.

    Decoding happens here (the datasets column is read undecoded) so that a bad file is reported
    by name rather than as a bare PIL traceback.
    """

    def __init__(self, ds, processor, cache: bool = True):
        self.ds = ds.cast_column("image", datasets.Image(decode=False))
        self.processor = processor
        self._cache = {} if cache else None  # decoded once; later epochs skip PIL entirely

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = self._load(int(i))
        if self._cache is not None:
            self._cache[i] = item
        return item

    def _load(self, i):
        row = self.ds[int(i)]
        raw = row["image"]
        name = raw.get("path") or f"row {i}"
        try:
            img = Image.open(io.BytesIO(raw["bytes"]) if raw.get("bytes") else raw["path"]).convert("RGB")
        except Exception as e:
            raise DataError(f"cannot decode image {name!r}: {e}") from None
        pix = self.processor(img, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pix, "labels": torch.tensor(row["label"])}
