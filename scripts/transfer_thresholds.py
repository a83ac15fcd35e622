#!/usr/bin/env python3
"""The measurement behind vitcore.spec.checks.TRANSFER (issue 30): the plain PyTorch loop
(vitcore.training.plain) fine-tunes vit-tiny on Fashion-MNIST's held-out classes (pullover / coat /
shirt, transfer.TRANSFER_DATA) with transfer.TRANSFER_RECIPE, from the stand-in checkpoint and from
random initialisation, over several seeds; prints the per-epoch held-out accuracy and the thresholds
this measurement sets:

    min_accuracy = the stand-in runs' lowest final accuracy minus their spread (max - min), floored to 0.01
    margin       = half the smallest per-seed gap (stand-in minus random, final epoch), floored to 0.01

    python3 scripts/transfer_thresholds.py [--weights FOLDER] [--seeds 42,43,44,45,46,47] [--out FILE.json]

Without --weights the stand-in is pre-trained first (pretrain.RECIPES['vit-tiny'], seconds on a CPU).
"""
import argparse
import json
import math
import tempfile
import time

from vitcore.training import plain, pretrain, transfer


def floor2(x: float) -> float:
    return math.floor(x * 100) / 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help="a stand-in folder (default: pre-train one now)")
    ap.add_argument("--seeds", default="42,43,44,45,46,47")
    ap.add_argument("--out", default=None, help="write the measurement and the thresholds as JSON")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    tmp = tempfile.mkdtemp(prefix="vitcore-standin-")
    weights = a.weights
    if weights is None:
        weights = f"{tmp}/{pretrain.standin_name('vit-tiny')}"
        pretrain.pretrain(weights, model="vit-tiny")
    data = transfer.transfer_data()
    runs = []
    for seed in seeds:
        for init in ("standin", "random"):
            t0 = time.perf_counter()
            h = plain.finetune(data, seed=seed, weights=weights if init == "standin" else None,
                               **transfer.TRANSFER_RECIPE)
            acc = [round(e["eval_accuracy"], 4) for e in h["epochs"]]
            runs.append({"seed": seed, "init": init, "accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"seed {seed} {init:8s} held-out accuracy per epoch {acc} ({runs[-1]['seconds']} s)", flush=True)
    pre = [r["accuracy"][-1] for r in runs if r["init"] == "standin"]
    rnd = [r["accuracy"][-1] for r in runs if r["init"] == "random"]
    gaps = [p - r for p, r in zip(pre, rnd, strict=True)]
    out = {"data": data.source, "recipe": transfer.TRANSFER_RECIPE, "weights": weights, "runs": runs,
           "standin_final": pre, "random_final": rnd, "gaps": [round(g, 4) for g in gaps],
           "min_accuracy": floor2(min(pre) - (max(pre) - min(pre))), "margin": floor2(min(gaps) / 2)}
    print(f"stand-in final {pre}, random final {rnd}, gaps {out['gaps']}")
    print(f"thresholds: min_accuracy {out['min_accuracy']:.2f}, margin {out['margin']:.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
