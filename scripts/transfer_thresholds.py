#!/usr/bin/env python3
"""The measurement behind fixtures/transfer-thresholds.json (issue 30): the plain PyTorch loop
(vitcore.training.plain) fine-tunes vit-tiny on Fashion-MNIST's held-out classes (pullover / coat /
shirt, transfer.TRANSFER_DATA) with transfer.TRANSFER_RECIPE, from the stand-in checkpoint and from
random initialisation, over several seeds; prints the per-epoch held-out accuracy and the thresholds
this measurement sets:

    min_accuracy = the stand-in runs' lowest final accuracy minus their spread (max - min), floored to 0.01
    margin       = half the smallest per-seed gap (stand-in minus random, final epoch), floored to 0.01

    python3 scripts/transfer_thresholds.py [--weights FOLDER] [--seeds 42,43,44,45,46,47] [--device cpu|cuda]
                                           [--precision fp32|bf16|fp16] [--out FILE.json] [--record THRESHOLDS.json]

--record merges the thresholds, with what measured them, into the data file the tests read
(vitcore.spec.checks.transfer_threshold), under model / device / precision.

The thresholds hold on the device they were measured on: GPU kernels take a run from random
initialisation elsewhere than the CPU's (seen: the CPU's margin failed torch_fsdp bf16 on an H200).

Without --weights the stand-in is pre-trained first (pretrain.RECIPES['vit-tiny'], seconds on a CPU).
"""
import argparse
import json
import math
import pathlib
import tempfile
import time

from vitcore.files import write_atomic
from vitcore.spec.env import environment
from vitcore.training import plain, pretrain, transfer


def floor2(x: float) -> float:
    return math.floor(x * 100) / 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help="a stand-in folder (default: pre-train one now)")
    ap.add_argument("--seeds", default="42,43,44,45,46,47")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the plain loop runs")
    ap.add_argument("--precision", default="fp32", choices=tuple(plain.AUTOCAST), help="the plain loop's autocast")
    ap.add_argument("--record", default=None, help="merge the thresholds into this data file")
    ap.add_argument("--out", default=None, help="write the measurement and the thresholds as JSON")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    tmp = tempfile.mkdtemp(prefix="vitcore-standin-")
    weights = a.weights
    if weights is None:
        weights = f"{tmp}/{pretrain.standin_name('vit-tiny')}"
        pretrain.pretrain(weights, model="vit-tiny")  # on the CPU, as the test fixtures make it
    data = transfer.transfer_data()
    runs = []
    for seed in seeds:
        for init in ("standin", "random"):
            t0 = time.perf_counter()
            h = plain.finetune(data, seed=seed, weights=weights if init == "standin" else None, device=a.device,
                               precision=a.precision, **transfer.TRANSFER_RECIPE)
            acc = [round(e["eval_accuracy"], 4) for e in h["epochs"]]
            runs.append({"seed": seed, "init": init, "accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"seed {seed} {init:8s} held-out accuracy per epoch {acc} ({runs[-1]['seconds']} s)", flush=True)
    pre = [r["accuracy"][-1] for r in runs if r["init"] == "standin"]
    rnd = [r["accuracy"][-1] for r in runs if r["init"] == "random"]
    gaps = [p - r for p, r in zip(pre, rnd, strict=True)]
    out = {"device": a.device, "precision": a.precision, "data": data.source, "recipe": transfer.TRANSFER_RECIPE, "weights": weights, "runs": runs,
           "standin_final": pre, "random_final": rnd, "gaps": [round(g, 4) for g in gaps],
           "min_accuracy": floor2(min(pre) - (max(pre) - min(pre))), "margin": floor2(min(gaps) / 2)}
    print(f"stand-in final {pre}, random final {rnd}, gaps {out['gaps']}")
    print(f"thresholds: min_accuracy {out['min_accuracy']:.2f}, margin {out['margin']:.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
    if a.record:
        record(a.record, out, seeds, len(data.test))


def record(path: str, out: dict, seeds: list[int], n_test: int):
    """Merge this measurement's thresholds into the data file, written whole or not at all (atomic)."""
    p = pathlib.Path(path)
    table = json.loads(p.read_text()) if p.is_file() else {}
    env = environment(cuda=out["device"] == "cuda")
    rng = lambda xs: [min(xs), max(xs)]  # noqa: E731
    entry = {"epochs": out["recipe"]["epochs"], "min_accuracy": out["min_accuracy"], "margin": out["margin"],
             "measured": {"device": env["device"], "torch": env["torch"], "git_sha": env["git_sha"],
                          "date": env["date"][:10], "seeds": f"{seeds[0]}-{seeds[-1]}" if seeds == list(
                              range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds)),
                          "standin_final": rng(out["standin_final"]), "random_final": rng(out["random_final"]),
                          "gaps": rng(out["gaps"]), "test_photos": n_test,
                          "data": out["data"].rsplit(", ", 1)[0] + ")",  # without this host's path
                          "weights": pathlib.Path(out["weights"]).name}}
    table.setdefault(out["recipe"]["model"], {}).setdefault(out["device"], {})[out["precision"]] = entry
    write_atomic(p, json.dumps(table, indent=1) + "\n")  # not files.write_json: it sorts "about" away from the top
    print(f"recorded {out['recipe']['model']}/{out['device']}/{out['precision']} in {p}")


if __name__ == "__main__":
    main()
