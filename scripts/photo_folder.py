#!/usr/bin/env python3
"""A 3-class folder of real photographs for the convergence check (`pytest -m gpu --dataset OUT`),
from Debian's `dataset-fashion-mnist` (Zalando's Fashion-MNIST product photos, MIT/Expat): the only
labelled photo set found in the package registries this project can reach (PyPI's CIFAR, Imagenette
and STL packages download at run time; issue 15). Grayscale, 28x28 (--size repeats pixels, adds
none). Default classes pullover / coat / shirt, the set's most confused trio; 750 train and 250 test
images per class, dog_food's split. Writes OUT/{train,test}/<class>/<index in the file>.png:

    python3 scripts/photo_folder.py /tmp/photos [--classes 2,4,6] [--train 750] [--test 250] [--size 28]

The photos are vitcore.inputs.photos' (the same reader and choice of the first N per class as the
stand-in's pretraining and transfer data); the files are found as it finds them ($VITCORE_FASHION_MNIST,
/usr/share/datasets/fashion-mnist, the user cache, else `apt-get download`), or in --src.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from vitcore.inputs import photos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=750)
    ap.add_argument("--test", type=int, default=250)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--classes", default="2,4,6", help="Fashion-MNIST label ids (0-9)")
    ap.add_argument("--src", default=None, help="the folder of the four idx files")
    a = ap.parse_args()
    src = Path(a.src) if a.src else photos.find_source()
    classes = [int(c) for c in a.classes.split(",")]
    for split, per in (("train", a.train), ("test", a.test)):
        idx, images, labels = photos.class_photos(src, split, classes, per)
        for c in classes:
            (Path(a.out) / split / photos.NAMES[c]).mkdir(parents=True, exist_ok=True)
        for i, img, label in zip(idx, images, labels, strict=True):
            n = img.shape[0]
            rows = (np.arange(a.size) * n) // a.size  # nearest neighbour: pixels repeated, none made up
            Image.fromarray(np.ascontiguousarray(img[np.ix_(rows, rows)]), "L").save(
                Path(a.out) / split / photos.NAMES[classes[label]] / f"{i:05d}.png")
        print(split, {photos.NAMES[c]: int((labels == k).sum()) for k, c in enumerate(classes)})


if __name__ == "__main__":
    main()
