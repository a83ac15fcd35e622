#!/usr/bin/env python3
"""A 3-class folder of real photographs for the convergence check (`pytest -m gpu --dataset OUT`),
from Debian's `dataset-fashion-mnist` (Zalando's Fashion-MNIST product photos, MIT/Expat): the only
labelled photo set found in the package registries this project can reach (PyPI's CIFAR, Imagenette
and STL packages download at run time; issue 15). Grayscale, 28x28 (--size repeats pixels, adds
none). Default classes pullover / coat / shirt, the set's most confused trio; 750 train and 250 test
images per class, dog_food's split. Writes OUT/{train,test}/<class>/*.png, standard library only:

    python3 scripts/photo_folder.py /tmp/photos [--classes 2,4,6] [--train 750] [--test 250] [--size 28]

Looks for the files in --src, /usr/share/datasets/fashion-mnist (apt-get install
dataset-fashion-mnist), else runs `apt-get download` and unpacks the .deb into a temporary folder.
"""
import argparse
import glob
import gzip
import os
import struct
import subprocess
import tempfile
import zlib

NAMES = ["tshirt_top", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SUBDIR = "usr/share/datasets/fashion-mnist"


def find_src(src):
    cands = [src] if src else []
    here = os.path.dirname(os.path.abspath(__file__))
    cands += ["/" + SUBDIR, os.path.join(here, "deb", "root", SUBDIR)]
    for c in cands:
        if c and os.path.exists(os.path.join(c, "train-images-idx3-ubyte.gz")):
            return c
    tmp = tempfile.mkdtemp(prefix="fmnist-")
    subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, check=True)
    deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "root")], check=True)
    return os.path.join(tmp, "root", SUBDIR)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_png(path, w, h, rows):
    """rows: list of bytes objects, one per row, 8-bit grayscale."""
    raw = b"".join(b"\x00" + r for r in rows)
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def resize_nn(img, n, size):
    """img: bytes n*n -> list of `size` rows of `size` bytes (nearest neighbour)."""
    idx = [min(n - 1, (i * n) // size) for i in range(size)]
    return [bytes(img[r * n + c] for c in idx) for r in idx]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=750)
    ap.add_argument("--test", type=int, default=250)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--classes", default="2,4,6", help="Fashion-MNIST label ids (0-9)")
    ap.add_argument("--src", default=None)
    a = ap.parse_args()
    src = find_src(a.src)
    classes = [int(c) for c in a.classes.split(",")]
    for split, fn_img, fn_lab, per in (("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", a.train),
                                       ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", a.test)):
        (n_img, h, w), pix = read_idx(os.path.join(src, fn_img))
        (_,), labs = read_idx(os.path.join(src, fn_lab))
        counts = {c: 0 for c in classes}
        for c in classes:
            os.makedirs(os.path.join(a.out, split, NAMES[c]), exist_ok=True)
        for i in range(n_img):  # deterministic: first `per` examples of each class
            c = labs[i]
            if c in counts and counts[c] < per:
                img = pix[i * h * w:(i + 1) * h * w]
                rows = resize_nn(img, h, a.size) if a.size != h else [img[r * w:(r + 1) * w] for r in range(h)]
                write_png(os.path.join(a.out, split, NAMES[c], f"{i:05d}.png"), a.size, a.size, rows)
                counts[c] += 1
            if all(v >= per for v in counts.values()):
                break
        print(split, {NAMES[c]: v for c, v in counts.items()})


if __name__ == "__main__":
    main()
