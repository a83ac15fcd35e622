"""Fashion-MNIST's product photographs (Zalando, MIT/Expat; Debian's `dataset-fashion-mnist`) as
datasets of chosen classes: the pretraining data of the suite's stand-in checkpoint (issue 30) and
the fine-tuning data it transfers to.

The split is by class, so that fine-tuning sees classes the pretraining never saw (as dog_food's
classes are not ImageNet-21k's training task): FINETUNE_CLASSES are the three that
scripts/photo_folder.py writes by default (pullover / coat / shirt, the set's most confused trio),
PRETRAIN_CLASSES the other seven. Images are taken in file order, the first N of each class (what
photo_folder.py writes), so `load_classes(FINETUNE_CLASSES, 750, 250)` holds the same photos as
the folder `scripts/photo_folder.py OUT` writes.

The files are looked for in $VITCORE_FASHION_MNIST, /usr/share/datasets/fashion-mnist (`apt-get
install dataset-fashion-mnist`) and the user cache; else `apt-get download` fetches the package into
the user cache (31 MB, once). Standard library, numpy and PIL; no network beyond apt.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from vitcore import DataError
from vitcore.files import cache_dir
from vitcore.inputs.data import DogFood

NAMES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FINETUNE_CLASSES = (2, 4, 6)  # pullover, coat, shirt: scripts/photo_folder.py's default
PRETRAIN_CLASSES = tuple(c for c in range(10) if c not in FINETUNE_CLASSES)  # the other 7
PACKAGE = "dataset-fashion-mnist"
SUBDIR = "usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
ENV = "VITCORE_FASHION_MNIST"


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for pair in FILES.values() for f in pair)


def candidates() -> list[Path]:
    """Where the files are looked for, in order."""
    out = [Path(os.environ[ENV]).expanduser()] if os.environ.get(ENV) else []
    return out + [Path("/") / SUBDIR, cache_dir("fashion-mnist") / SUBDIR]


def find_source(fetch: bool = True) -> Path:
    """The folder holding Fashion-MNIST's four idx files; fetched with `apt-get download` into the
    user cache when none holds them (fetch=True); else a DataError naming the folders tried."""
    tried = candidates()
    for folder in tried:
        if _has_files(folder):
            return folder
    if os.environ.get(ENV):
        raise DataError(f"${ENV}={os.environ[ENV]!r} does not hold Fashion-MNIST's files "
                        f"({', '.join(f for pair in FILES.values() for f in pair)})")
    if fetch and shutil.which("apt-get") and shutil.which("dpkg-deb"):
        root = cache_dir("fashion-mnist")
        with tempfile.TemporaryDirectory(prefix="fmnist-") as tmp:
            got = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if got.returncode == 0 and debs:
                root.mkdir(parents=True, exist_ok=True)
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        if _has_files(tried[-1]):
            return tried[-1]
    raise DataError(f"Fashion-MNIST's files are in none of {', '.join(map(str, tried))} and `apt-get download "
                    f"{PACKAGE}` did not fetch them; run `apt-get install {PACKAGE}` or set ${ENV}")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip'd) as a uint8 array of its dimensions; a DataError naming a bad file."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
        magic, = struct.unpack(">I", data[:4])
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, EOFError, struct.error, ValueError) as e:
        raise DataError(f"Fashion-MNIST file {path} cannot be read ({type(e).__name__}: {e})") from None


def check_classes(classes) -> tuple[int, ...]:
    classes = tuple(classes)
    bad = [c for c in classes if not (isinstance(c, int) and 0 <= c < len(NAMES))]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise DataError(f"Fashion-MNIST classes {list(classes)}: need 2 or more distinct ids in 0..9 "
                        f"({', '.join(f'{i}={n}' for i, n in enumerate(NAMES))})")
    return classes


def _first_per_class(labels: np.ndarray, classes, per: int, split: str) -> list[int]:
    """Indices of the first `per` images of each class, in file order."""
    idx = []
    for c in classes:
        hits = np.flatnonzero(labels == c)[:per]
        if len(hits) < per:
            raise DataError(f"Fashion-MNIST {split} split has {len(hits)} images of {NAMES[c]}, {per} asked")
        idx += hits.tolist()
    return sorted(idx)


def class_photos(src: Path, split: str, classes, per: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(their indices in the file, images uint8 [n, 28, 28], labels 0..k-1 in the order of `classes`):
    the first `per` photos of each class of `split` (train | test), in file order."""
    classes = check_classes(classes)
    images, labels = read_idx(src / FILES[split][0]), read_idx(src / FILES[split][1])
    idx = _first_per_class(labels, classes, per, split)
    remap = np.zeros(len(NAMES), dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    return idx, images[idx], remap[labels[idx]]


def class_arrays(src: Path, split: str, classes, per: int) -> tuple[np.ndarray, np.ndarray]:
    """class_photos without the indices."""
    return class_photos(src, split, classes, per)[1:]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG")
    return buf.getvalue()


def load_classes(classes, train_per_class: int, test_per_class: int, *, src: Path | None = None):
    """A DogFood of these Fashion-MNIST classes (labels 0..k-1 in the order
    given, named by NAMES): the first `train_per_class` / `test_per_class` photos of each class from
    the train / t10k files, as 28x28 grayscale PNGs (the processor makes them RGB at the preset's size)."""
    classes = check_classes(classes)
    if min(train_per_class, test_per_class) < 1:
        raise DataError(f"images per class {train_per_class} / {test_per_class}: must be >= 1")
    src = Path(src) if src is not None else find_source()
    names = [NAMES[c] for c in classes]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        images, labels = class_arrays(src, split, classes, per)
        rows = {"image": [{"bytes": _png(img), "path": None} for img in images], "label": labels.tolist()}
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    source = (f"fashion-mnist:{'/'.join(names)} (first {train_per_class}+{test_per_class} per class, "
              f"{src})")
    return DogFood(splits["train"], splits["test"], names, source)
