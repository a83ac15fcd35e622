"""Fine-tuning from pretrained weights, per plugin (issue 30).

The suite's stand-in for the in21k checkpoint (vitcore.training.pretrain: vit-tiny pre-trained on
Fashion-MNIST's 7 classes that are not fine-tuned on) goes pretrain -> save_pretrained -> --weights
FOLDER -> build_model -> booster.boost, and every tensor but the classifier must come out of the
plugin's own state-dict path as it was saved (vitcore.training.transfer.check_survival: exact for
fp32, within the cast for bf16 / fp16), the classifier fresh with the fine-tuning label count. A
checkpoint altered after saving, a tensor re-initialised or re-cast by a plugin, and a head kept
from the checkpoint are each caught by name. Then transfer: from the stand-in each plugin reaches
its recorded accuracy on the held-out classes within 4 epochs and leads the same plugin from random
initialisation by its margin (fixtures/transfer-thresholds.json, per device and precision, each set
with the plain loop on that device: scripts/transfer_thresholds.py --record).

CPU: the entries with CPU precisions (hybrid_parallel's tp2 / pp2 / tp2pp2 in 2 or 4 gloo processes,
marked slow). GPU (`pytest -m gpu`): every single-GPU entry and precision.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.gpu import computed_once, session_dir
from tests.support.runs import run
from vitcore.inputs import model as model_mod
from vitcore.inputs import photos
from vitcore.processes import launch
from vitcore.spec import plugins
from vitcore.spec.checks import CheckFailed, require_transfer, transfer_threshold
from vitcore.spec.config import RunConfig
from vitcore.training import plain, pretrain, transfer

TINY = "vit-tiny"
NAME = "vitcore-standin-fmnist7-vit-tiny"
QUICK = dict(train_per_class=100, test_per_class=20, epochs=1)  # survival needs weights, not good ones: ~1 s
THRESHOLDS = Path(__file__).resolve().parent.parent / "fixtures" / "transfer-thresholds.json"
SURVIVAL = dict(model=TINY, batch_size=16, dataset="embedded", device="cpu", timeout_s=300)


def _cpu_cases():
    """(entry, precision) for every registry entry and CPU precision; multi-process ones are slow."""
    return [pytest.param(s, p, id=f"{s.name}-{p}", marks=[pytest.mark.slow] if s.min_world_size > 1 else [])
            for s in plugins.REGISTRY.values() for p in s.cpu_precisions]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A quick stand-in (7 classes, 100 photos each, 1 epoch), as `vitcore pretrain` writes one."""
    return pretrain.pretrain(tmp_path_factory.mktemp("standin") / NAME, model=TINY, **QUICK)


@pytest.fixture(scope="module")
def standin_full(tmp_path_factory):
    """The stand-in of pretrain.RECIPES['vit-tiny'] (the one the transfer thresholds were measured with)."""
    return pretrain.pretrain(tmp_path_factory.mktemp("standin-full") / NAME, model=TINY)


def _folder(prov) -> str:
    return prov["folder"]


def test_the_standin_says_what_it_is(standin):
    folder = _folder(standin)
    assert standin["name"] == NAME and standin["stand_in_for"] == "google/vit-base-patch16-224-in21k"
    assert standin["classes"] == ["tshirt_top", "trouser", "dress", "sandal", "sneaker", "bag", "ankle_boot"]
    assert standin["held_out_classes"] == ["pullover", "coat", "shirt"]
    assert not set(standin["classes"]) & set(standin["held_out_classes"])
    assert standin["train_images"] == 700 and standin["steps"] == 700 // 64 and standin["recipe"]["seed"] == 0
    assert standin["git_sha"] and standin["created"] and "Fashion-MNIST" in standin["data_source"]
    assert pretrain.fingerprints(f"{folder}/model.safetensors") == standin["tensors"]
    vit, source = model_mod.build_model(model_mod.PRESETS[TINY], labels=["pullover", "coat", "shirt"], weights=folder)
    assert source == f"pretrained:{folder} ({NAME}: {model_mod.STANDIN_NOTE})"
    assert tuple(vit.classifier.weight.shape) == (3, 64)  # the pretraining head had 7 rows


def test_a_head_of_the_same_shape_for_other_labels_is_reinitialised(tmp_path):
    """transformers keeps a classifier whose shape matches; build_model keeps it only for the same labels."""
    from transformers import ViTForImageClassification

    preset = model_mod.PRESETS[TINY]
    torch.manual_seed(3)
    saved = ViTForImageClassification(preset.hf_config(num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                                       attention="eager"))
    saved.classifier.bias.data.fill_(0.5)
    saved.save_pretrained(tmp_path / "three")
    same, source = model_mod.build_model(preset, labels=["a", "b", "c"], weights=str(tmp_path / "three"))
    assert torch.equal(same.classifier.weight, saved.classifier.weight) and "re-initialised" not in source
    other, source = model_mod.build_model(preset, labels=["pullover", "coat", "shirt"], weights=str(tmp_path / "three"))
    assert source.endswith("(classifier re-initialised: the checkpoint's labels are not the dataset's)")
    assert not torch.equal(other.classifier.weight, saved.classifier.weight)
    assert float(other.classifier.bias.abs().max()) == 0.0
    assert torch.equal(other.vit.encoder.layer[1].output.dense.weight, saved.vit.encoder.layer[1].output.dense.weight)


def test_pretrain_refuses_to_write_over_a_folder(standin):
    with pytest.raises(Exception, match=r"exists and is not empty"):
        pretrain.pretrain(_folder(standin), model=TINY, **QUICK)


def _boost_and_check(entry, precision, weights, **kw) -> dict:
    cfg = RunConfig(plugin=entry.name, precision=precision, weights=weights, world_size=entry.min_world_size,
                    **(SURVIVAL | kw))
    return launch.run(transfer.boost_and_check, cfg, None, world_size=cfg.world_size, device="cpu",
                      timeout_s=cfg.timeout_s)[0]


@pytest.mark.parametrize(("entry", "precision"), _cpu_cases())
def test_weights_survive_boosting(entry, precision, standin):
    got = _boost_and_check(entry, precision, _folder(standin))
    print(got["verdict"])
    assert got["survived"], got["verdict"]
    s = transfer.survival_from(got)
    non_head = [k for k in standin["tensors"] if not k.startswith("classifier.")]
    assert s.compared == s.exact == len(non_head) and s.dtypes == ["float32"]  # fp32: bit-exact
    assert NAME in got["weights"]


def _altered(standin, tmp_path, name="vit.encoder.layer.1.attention.attention.query.weight"):
    from safetensors.torch import load_file, save_file

    d = shutil.copytree(_folder(standin), tmp_path / NAME)
    tensors = load_file(str(d / "model.safetensors"))
    tensors[name][0, 0] += 1e-3
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d, name


def test_a_checkpoint_altered_after_saving_is_caught_by_name(standin, tmp_path):
    d, name = _altered(standin, tmp_path)
    got = _boost_and_check(plugins.get("torch_ddp"), "fp32", str(d))
    print(got["verdict"])
    assert not got["survived"]
    assert got["verdict"].startswith(f"{NAME} through fp32: 1 tensor(s) did not survive: {name}: the checkpoint "
                                     "file's tensor differs from the one saved")
    with pytest.raises(CheckFailed, match=name):
        transfer.require_survival(transfer.survival_from(got))


def _state(folder, num_labels=3, seed=0):
    """What a faithful plugin gathers: the checkpoint's tensors and a fresh head."""
    raw = transfer.checkpoint_tensors(folder)
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in raw.items() if not k.startswith("classifier.")}
    state["classifier.weight"] = torch.randn(num_labels, 64) * 0.02
    state["classifier.bias"] = torch.zeros(num_labels)
    return state


def test_the_survival_check_fails_on_what_a_plugin_could_do(standin):
    folder, key = _folder(standin), "vit.encoder.layer.0.output.dense.weight"

    def verdict(state, precision="fp32", labels=3):
        return transfer.check_survival(state, folder, precision=precision, num_labels=labels)

    assert verdict(_state(folder)).ok  # the baseline passes
    one_ulp = _state(folder)
    one_ulp[key][3, 5] = torch.nextafter(one_ulp[key][3, 5], torch.tensor(1.0))
    v = verdict(one_ulp)
    flat = 3 * one_ulp[key].shape[1] + 5
    assert not v.ok and v.mismatches[0].startswith(f"encoder.layer.0.output.dense.weight: 1 of {one_ulp[key].numel()} "
                                                   f"values differ beyond exact (fp32), first at flat index {flat}")
    bf16 = {k: v.to(torch.bfloat16) for k, v in _state(folder).items()}
    assert verdict(bf16, "bf16").ok  # within the cast
    assert not verdict(bf16, "fp32").ok and "held as bfloat16 in a fp32 run" in verdict(bf16, "fp32").mismatches[0]
    assert verdict({k: v.to(torch.float16) for k, v in _state(folder).items()}, "fp16").ok
    off = dict(bf16)
    off[key] = off[key].clone()
    off[key][0, 0] = off[key][0, 0].float() * (1 + 2 ** -6)  # 2 bf16 steps: more than a cast
    assert not verdict(off, "bf16").ok and "within the bfloat16 cast" in verdict(off, "bf16").mismatches[0]
    upcast = {k: v.float() for k, v in bf16.items()}  # Gemini's state dict: the bf16 working copy as float32
    assert verdict(upcast, "bf16").ok and verdict(upcast, "bf16").exact < verdict(upcast, "bf16").compared
    assert not verdict(upcast, "fp32").ok and "beyond exact (fp32)" in verdict(upcast, "fp32").mismatches[0]
    off32 = {k: v.float() for k, v in off.items()}
    assert not verdict(off32, "bf16").ok and "within the bfloat16 cast" in verdict(off32, "bf16").mismatches[0]
    reinit = _state(folder)
    reinit[key] = torch.randn_like(reinit[key]) * 0.02  # a lazy init that discarded the checkpoint
    assert [m.split(":")[0] for m in verdict(reinit).mismatches] == ["encoder.layer.0.output.dense.weight"]
    assert not verdict(_state(folder), labels=7).ok  # the head must have the fine-tuning label count
    raw = transfer.checkpoint_tensors(folder)
    kept = _state(folder, num_labels=7) | {k: raw[k] for k in ("classifier.weight", "classifier.bias")}
    assert any("equals the checkpoint's head" in m for m in verdict(kept, labels=7).mismatches)
    dropped = {k: v for k, v in _state(folder).items() if "layernorm_before" not in k}
    assert len([m for m in verdict(dropped).mismatches if "not in the boosted model" in m]) == 4


def test_wrappers_names_are_mapped_to_the_checkpoints():
    assert transfer.checkpoint_name("module._orig_mod.vit.encoder.layer.0.output.dense.weight") == "encoder.layer.0.output.dense.weight"
    assert transfer.checkpoint_name("vit._fsdp_wrapped_module.encoder.layer.1._fsdp_wrapped_module.output.dense.bias") == \
        "encoder.layer.1.output.dense.bias"
    assert transfer.checkpoint_name("classifier.weight") == "classifier.weight"


def test_a_checkpoint_without_provenance_is_its_own_reference(tmp_path):
    """An in21k-shaped folder (a ViTModel with a pooler, no classifier, no provenance) loads and survives."""
    from transformers import ViTModel

    cfg = model_mod.PRESETS[TINY].hf_config(num_labels=2, id2label={0: "a", 1: "b"}, attention="eager")
    torch.manual_seed(1)
    ViTModel(cfg, add_pooling_layer=True).save_pretrained(tmp_path / "in21k-like")
    got = _boost_and_check(plugins.get("torch_ddp"), "fp32", str(tmp_path / "in21k-like"))
    assert got["survived"], got["verdict"]
    assert "no provenance file" in got["survival"]["integrity"] and got["survival"]["compared"] == 38


# --- transfer --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def held_out():
    return transfer.transfer_data()


@pytest.fixture(scope="module")
def plain_transfer(held_out, standin_full):
    """The plain loop from the stand-in and from random init, once per case seed (the measurement's first seeds)."""
    seeds = transfer_threshold(TINY, "cpu", "fp32", THRESHOLDS).seeds
    return {w: [plain.finetune(held_out, seed=seed, weights=_folder(standin_full) if w == "standin" else None,
                               **transfer.TRANSFER_RECIPE) for seed in seeds] for w in ("standin", "random")}


@pytest.mark.slow
def test_plain_loop_transfers(plain_transfer):
    pre, rand = plain_transfer["standin"], plain_transfer["random"]
    t = transfer_threshold(TINY, "cpu", "fp32", THRESHOLDS)
    acc, lead = require_transfer(pre, rand, epoch=t.epochs, min_accuracy=t.min_accuracy, margin=t.margin)
    print(f"plain loop: from the stand-in {acc:.3f}, lead {lead:+.3f} over random init ({t.why})")
    with pytest.raises(CheckFailed, match="leads random init by"):  # random init against itself: no lead
        require_transfer(rand, rand, epoch=t.epochs, min_accuracy=0.0, margin=t.margin)


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "precision"), [pytest.param(s, p, id=f"{s.name}-{p}")
                                                  for s in plugins.REGISTRY.values() for p in s.cpu_precisions])
def test_transfer_converges(entry, precision, held_out, standin_full, plain_transfer):
    t = transfer_threshold(TINY, "cpu", precision, THRESHOLDS)
    kw = dict(transfer.TRANSFER_RECIPE, plugin=entry.name, precision=precision, world_size=entry.min_world_size)
    pre = [run(held_out, weights=_folder(standin_full), seed=seed, **kw) for seed in t.seeds]
    rand = [run(held_out, weights="random", seed=seed, **kw) for seed in t.seeds]
    acc, lead = require_transfer(pre, rand, epoch=t.epochs, min_accuracy=t.min_accuracy, margin=t.margin)
    print(f"{entry.name} {precision}: from {pre[0]['weights']} {acc:.3f}, lead {lead:+.3f} over random init")
    if entry.name == "torch_ddp":  # one gloo rank repeats the plain loop's float operations: bit-exact
        assert [h["step_loss"] for h in pre] == [h["step_loss"] for h in plain_transfer["standin"]]
        assert [h["step_loss"] for h in rand] == [h["step_loss"] for h in plain_transfer["random"]]


# --- GPU tier: every single-GPU entry and precision -----------------------------------------------
@pytest.fixture(scope="module")
def gpu_standin(request):
    """The vit-tiny stand-in, made once per session on the CPU (seconds) for the GPU workers to load."""
    folder = session_dir(request.config) / NAME
    return computed_once(request.config, "standin", (NAME, sorted(pretrain.RECIPES[TINY].__dict__.items())),
                         lambda: pretrain.pretrain(folder, model=TINY, overwrite=True)["folder"])


@pytest.mark.gpu
def test_gpu_weights_survive_boosting(spec, precision, gpu_standin, gpu_pool, gpu_results):
    cfg = RunConfig(plugin=spec.name, precision=precision, device="cuda", weights=gpu_standin, model=TINY,
                    batch_size=16)
    got = gpu_pool.run(transfer.boost_and_check, (cfg, None), timeout_s=900)
    gpu_results.add("weights-survival", {k: v for k, v in got.items() if k != "survival"})
    print(got["verdict"])
    transfer.require_survival(transfer.survival_from(got))


@pytest.mark.gpu
def test_gpu_transfer_converges(spec, precision, gpu_standin, gpu_pool, gpu_results):
    from vitcore.training import train  # colossalai: imported where a GPU case needs it

    t = transfer_threshold(TINY, "cuda", precision, THRESHOLDS)  # before the runs: none recorded, no run
    d = transfer.transfer_data()
    hist = {w: [gpu_pool.run(train.finetune, (RunConfig(plugin=spec.name, precision=precision, device="cuda", weights=w,
                                                        seed=seed, **transfer.TRANSFER_RECIPE), d), timeout_s=900)
                for seed in t.seeds] for w in (gpu_standin, "random")}
    pre, rand = hist[gpu_standin], hist["random"]
    for seed, p, r in zip(t.seeds, pre, rand, strict=True):
        gpu_results.add("transfer", p | {"seed": seed, "random_init_epochs": r["epochs"], "min_accuracy": t.min_accuracy,
                                         "margin": t.margin, "thresholds": t.why})
    acc, lead = require_transfer(pre, rand, epoch=t.epochs, min_accuracy=t.min_accuracy, margin=t.margin)
    print(f"{spec.name} {precision}: from the stand-in {acc:.3f}, lead {lead:+.3f} over random init, mean of "
          f"seeds {t.seeds} ({t.why})")


def _hist(accuracy: float, plugin="torch_fsdp") -> dict:
    return {"plugin": plugin, "status": "ok", "weights": "w",
            "epochs": [{"eval_accuracy": a} for a in (0.4, 0.5, 0.6, accuracy)]}


def test_the_transfer_check_judges_the_mean_over_seeds():
    """The H200's torch_fsdp bf16 seeds 42-44 (leads +0.030, +0.092, +0.104): one seed alone fails the
    0.03 margin, their mean passes; three runs that lost the weights (leads about 0) fail; unpaired fails."""
    pre, rand = [_hist(488 / 768), _hist(0.664), _hist(0.668)], [_hist(465 / 768), _hist(0.572), _hist(0.564)]
    with pytest.raises(CheckFailed, match=r"leads random init by \+0.030 < required 0.03"):
        require_transfer(pre[0], rand[0], epoch=4, min_accuracy=0.55, margin=0.03)
    acc, lead = require_transfer(pre, rand, epoch=4, min_accuracy=0.55, margin=0.03)
    assert acc == pytest.approx((488 / 768 + 0.664 + 0.668) / 3) and lead == pytest.approx(0.0753, abs=1e-4)
    lost = [_hist(0.60), _hist(0.57), _hist(0.56)]
    with pytest.raises(CheckFailed, match=r"mean of 3 seeds; leads -0.005, -0.002, -0.004"):
        require_transfer(lost, rand, epoch=4, min_accuracy=0.55, margin=0.03)
    with pytest.raises(CheckFailed, match="as many random-init runs as stand-in runs, got 3 and 2"):
        require_transfer(pre, rand[:2], epoch=4, min_accuracy=0.55, margin=0.03)


def test_the_held_out_classes_are_photo_folders_default():
    """The fine-tuning side is the trio scripts/photo_folder.py writes by default (the GPU convergence photos)."""
    text = (Path(__file__).resolve().parent.parent / "scripts" / "photo_folder.py").read_text()
    assert 'default="2,4,6"' in text and photos.FINETUNE_CLASSES == (2, 4, 6)
    assert json.dumps(sorted(photos.PRETRAIN_CLASSES + photos.FINETUNE_CLASSES)) == json.dumps(list(range(10)))


def test_photo_folder_writes_the_photos_the_suite_reads(tmp_path):
    """scripts/photo_folder.py's folder holds vitcore.inputs.photos' photos (one reader): the same first N of each
    class, named by their index in the file, each pixel repeated by --size and none made up."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(root / "scripts" / "photo_folder.py"), str(tmp_path), "--train", "3",
                        "--test", "2", "--size", "56"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert p.returncode == 0, p.stderr[-2000:]
    src = photos.find_source()
    for split, per in (("train", 3), ("test", 2)):
        idx, images, labels = photos.class_photos(src, split, photos.FINETUNE_CLASSES, per)
        files = sorted((tmp_path / split).rglob("*.png"))
        assert sorted(f.name for f in files) == sorted(f"{i:05d}.png" for i in idx)
        for i, img, label in zip(idx, images, labels, strict=True):
            name = photos.NAMES[photos.FINETUNE_CLASSES[label]]
            got = np.asarray(Image.open(tmp_path / split / name / f"{i:05d}.png"))
            assert np.array_equal(got, img.repeat(2, 0).repeat(2, 1))


@pytest.mark.slow
def test_vitcore_pretrain_then_train_names_the_standin(tmp_path):
    """The issue's commands as a user runs them: `vitcore pretrain`, then `vitcore train --weights FOLDER`."""
    import os
    import subprocess
    import sys

    root, env = Path(__file__).resolve().parent.parent, {**os.environ, "HF_HUB_OFFLINE": "1"}
    d = tmp_path / NAME
    p = subprocess.run([sys.executable, "-m", "vitcore.cli", "pretrain", "--out", str(d), "--device", "cpu",
                        "--model", TINY, "--epochs", "1"], capture_output=True, text=True, timeout=300, cwd=root, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"vitcore: {NAME} in {d} (109 steps" in p.stdout and f"--weights {d}" in p.stdout
    again = subprocess.run([sys.executable, "-m", "vitcore.cli", "pretrain", "--out", str(d), "--device", "cpu"],
                           capture_output=True, text=True, timeout=300, cwd=root, env=env)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"vitcore: error: pretrain output {str(d)!r} exists and is not empty; choose another folder or overwrite")
    out = tmp_path / "train.json"
    t = subprocess.run([sys.executable, "-m", "vitcore.cli", "train", "--device", "cpu", "--model", TINY, "--weights",
                        str(d), "--epochs", "1", "--subset", "96", "--out", str(out)], capture_output=True, text=True,
                       timeout=300, cwd=root, env=env)
    assert t.returncode == 0, t.stderr[-3000:]
    assert json.loads(out.read_text())["weights"] == f"pretrained:{d} ({NAME}: {model_mod.STANDIN_NOTE})"
