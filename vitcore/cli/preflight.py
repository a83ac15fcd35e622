"""Checks made before anything is trained or measured, and the claim on an output folder.

The options' values are checked as their typed objects are built (vitcore.cli.typed); here, what
needs the world: every output path, budget folder, history file and (for training) the weights
folder's files and every image of the chosen dataset, checked first; each problem is one
VitcoreError line naming the value and the valid choices, which `vitcore.cli.main` prints as
`vitcore: error: ...` with exit code 2. Only
then is `--out` locked against a second run and, for `--resume`, cleaned of torn lines and of
points that ended in error (measured again). The CLI imports this module at startup, so it stays
light: vitcore.inputs.data (torch, datasets) is imported only where a dataset is checked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vitcore import ConfigError, DataError, VitcoreError, files
from vitcore.inputs import model as model_mod
from vitcore.spec import plugins, points
from vitcore.spec.config import RunConfig, zero_steps_message
from vitcore.store import results

if TYPE_CHECKING:
    from vitcore.cli.typed import BenchOptions, ReportOptions, TrainOptions


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the suite's error format: one line, exit code 2 (argparse prints the usage
    block first; `--help` still shows it). Subparsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"vitcore: error: {message} (see `{self.prog} --help`)\n")


# --- commands ---------------------------------------------------------------------------------------
def check_bench(opts: BenchOptions) -> None:
    """`vitcore bench`, once its options are valid (typed.BenchOptions): output and budget folders,
    the fine-tuning dataset."""
    check_out_folder(opts.out, "--out")
    check_budget_folder(opts.budgets, "--budgets")
    check_budget_folder(opts.update_budgets, "--update-budgets")
    if opts.finetune:
        _data().split_sizes(opts.dataset or "auto")


def check_plan(groups: list[list], skipped: list[dict]) -> None:
    """`vitcore bench`, once planned: at least one plugin entry to measure (the reference alone is no
    benchmark); the error names every skip with its reason."""
    if not any(isinstance(c, RunConfig) for g in groups for c in g):
        why = "; ".join(f"{s['plugin']} {s['precision'] or ''}: {s['reason']}" for s in skipped) or "none selected"
        raise VitcoreError(f"nothing to measure: every selected plugin entry is skipped ({why}); CPU-capable: "
                           f"{cpu_capable()}")


def claim_out(out, *, resume: bool, run: dict) -> bool:
    """Lock `out` for this process (a stale lock of a killed run is taken over, and said so). Points
    already there are reused only with --resume and only when OUT/run.json names this run's code and
    settings (`run`: {"code", "date", "settings"}), said in one line with their sha and date; otherwise
    the run starts fresh, says why in one line, and moves the old points to points.jsonl.stale.
    A reused folder's lines that are not points go to points.jsonl.bad, and points that ended in
    error or timeout to points.jsonl.retried, so that they are measured again. Returns whether
    points are reused."""
    note = results.lock_out(out)
    if note:
        print(f"[vitcore] {note}", file=sys.stderr)
    path = Path(out) / "points.jsonl"
    if not resume and path.exists():
        raise VitcoreError(f"{path} exists; pass --resume to continue it or choose another --out")
    reuse, why = results.reuse_decision(out, run) if resume else (False, "")
    if not reuse or not path.exists():
        stale = results.start_fresh(out)
        if stale:
            print(f"[vitcore] --resume: starting fresh: {why} (old points moved to {stale})", file=sys.stderr)
        files.write_json(Path(out) / results.RUN_NAME, run)
        return False
    print(f"[vitcore] {why}", file=sys.stderr)
    bad, retried = results.prepare_resume(path)
    for b in bad:
        print(f"[vitcore] --resume: set aside {b} (kept in {path}.bad)", file=sys.stderr)
    if retried:
        names = ", ".join(f"{points.key_text(p)} ({p.get('status')}: {str(p.get('error'))[:80]})" for p in retried)
        print(f"[vitcore] --resume: measuring again {len(retried)} point(s) that ended in error or timeout: {names}",
              file=sys.stderr)
    return True


def check_train(opts: TrainOptions) -> None:
    """`vitcore train`, once its options are valid (typed.TrainOptions): paths, weights, the dataset
    (every image decoded once) and at least one optimizer step per epoch."""
    cfg = opts.config
    if opts.out:
        check_out_file(opts.out, "--out")
    if cfg.checkpoint_dir:
        check_out_folder(cfg.checkpoint_dir, "--checkpoint-dir")
    check_weights(cfg.weights, cfg.model)
    train_n, _ = _data().split_sizes(cfg.dataset, subset=cfg.subset)
    if cfg.epochs > 0 and math.ceil(train_n / cfg.dp_size) < cfg.batch_size:
        raise DataError(zero_steps_message(train_n, cfg.batch_size, cfg.dp_size))


def check_weights(weights: str, model: str) -> None:
    """`--weights`, before anything launches: its form (model.check_weights), then the folder it
    loads from: config.json a ViT of `model`'s architecture, a weights file whose header parses and
    whose tensors have the preset's shapes (model.check_weights_files). Imports torch, safetensors
    and transformers' ViT where there is a folder to read; never colossalai."""
    model_mod.check_weights(weights)
    model_mod.check_weights_files(weights, model_mod.get_preset(model))


def check_report(opts: ReportOptions) -> None:
    """`vitcore report`, once its options are valid (typed.ReportOptions): output folder, history,
    skipped.json beside each input, budgets. (The results and baseline files are read strictly by
    results.load, which names a bad line.)"""
    check_out_folder(opts.out, "--out")
    for h in opts.history:
        check_history(h)
    for f in opts.results:
        side = Path(f).parent / "skipped.json"
        if side.is_file():
            check_json_file(side, "skipped list", list)
    check_budget_folder(opts.budgets, "--budgets")


# --- files and folders ------------------------------------------------------------------------------
def check_out_folder(out, flag: str) -> None:
    """A folder that exists or can be created, and is writable."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} is a file; give a folder (it is created if missing)")
    _writable_ancestor(path, out, flag)


def check_out_file(out, flag: str) -> None:
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} is a folder; give a file path for the JSON")
    _writable_ancestor(path.parent, out, flag)


def _writable_ancestor(path: Path, out, flag: str) -> None:
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} cannot be created: {str(anc)!r} is a file")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(out)!r} cannot be written: {str(anc)!r} is not writable")


def check_json_file(path, what: str, kind: type) -> None:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} {'is a folder' if path.is_dir() else 'does not exist'}; "
                          "give a JSON file")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path}:{getattr(e, 'lineno', 1)} is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(obj, kind):
        raise ConfigError(f"{what} {path} holds a JSON {type(obj).__name__}; expected a JSON "
                          f"{'object' if kind is dict else 'list'}")


# what a fine-tuning history (vitcore train --out) holds that its chart is drawn and labelled from
HISTORY_FIELDS = ("plugin", "precision", "model", "dataset", "weights")
EPOCH_FIELDS = ("epoch", "train_loss", "eval_loss", "eval_accuracy")


def check_history(path) -> None:
    """A --history file: a JSON object holding a fine-tuning history, its "epochs" rows and the
    fields the chart is labelled by; otherwise one line naming the file and what it lacks."""
    check_json_file(path, "--history", dict)
    hist = json.loads(Path(path).read_text())
    epochs = hist.get("epochs")
    missing = [k for k in HISTORY_FIELDS if k not in hist]
    if not isinstance(epochs, list):
        missing.append('an "epochs" list')
    else:
        for i, e in enumerate(epochs):
            missing += [f"epochs[{i}].{k}" for k in EPOCH_FIELDS if k not in e] if isinstance(e, dict) else \
                [f"epochs[{i}] as an object, not a JSON {type(e).__name__}"]
    if missing:
        raise ConfigError(f"--history {path} is not a fine-tuning history (missing {', '.join(missing[:4])}"
                          f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}); "
                          "give the JSON `vitcore train --out` writes")


def check_budget_folder(folder, flag: str) -> None:
    """Every budget file in `folder` read now (a missing folder holds no budgets): valid JSON with
    an "entries" object, else an error naming the file, before anything is measured."""
    if folder is None:
        return
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {str(folder)!r} is a file; give the folder of per-device budget files")
    for f in sorted(path.glob("*.json")):
        try:
            book = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"budget file {f}:{getattr(e, 'lineno', 1)} is not valid JSON "
                              f"({getattr(e, 'msg', e)}); repair it or record it again with --update-budgets") from None
        if not isinstance(book, dict) or not isinstance(book.get("entries"), dict):
            raise ConfigError(f'budget file {f} has no "entries" object; it is not a vitcore budget file '
                              "(record one with --update-budgets)")


def cpu_capable() -> str:
    return ", ".join(f"{s.name} ({'/'.join(s.cpu_precisions)})" for s in plugins.REGISTRY.values()
                     if s.cpu_precisions)


def _data():
    """vitcore.inputs.data, imported when a dataset is checked: it brings torch and datasets (7 s here)."""
    # data imports datasets and numpy: only when a dataset is checked
    from vitcore.inputs import data

    return data
