"""`--weights DIR` whose files are broken (issue 26, item 3): one line naming the file and what is
wrong, before anything launches (preflight.check_weights reads config.json and the weights file's
header only), and the same from build_model where a file breaks after the check. It used to be a
37-line traceback (`SafetensorError: Error while deserializing header`), and a tensor of another
shape was silently re-initialised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vitcore import ConfigError
from vitcore.cli import preflight
from vitcore.inputs import model

ROOT = Path(__file__).resolve().parent.parent
TINY = model.PRESETS["vit-tiny"]
LABELS = ["chicken", "dog", "muffin"]


def _save(preset, folder: Path, **kw) -> Path:
    """A real ViT of `preset`'s architecture, written by save_pretrained (config.json + weights)."""
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    cfg = preset.hf_config(num_labels=3, id2label=dict(enumerate(LABELS)), attention="eager")
    ViTForImageClassification(cfg).save_pretrained(folder, **kw)
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("weights")
    return {"good": _save(TINY, base / "good"),
            "bin": _save(TINY, base / "bin", safe_serialization=False),
            "wide": _save(dataclasses.replace(TINY, intermediate_size=256), base / "wide")}


def _copy(saved, tmp_path, name="good") -> Path:
    return Path(shutil.copytree(saved[name], tmp_path / "w"))


def _garbage(d):
    (d / "model.safetensors").write_bytes(os.urandom(1000))


def _truncated(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


CASES = {
    # name: (how the folder is broken, what the one line says)
    "garbage": (_garbage, "weights file {d}/model.safetensors is corrupt or truncated (SafetensorError: Error "
                          "while deserializing header"),
    "truncated": (_truncated, "weights file {d}/model.safetensors is corrupt or truncated (SafetensorError: "
                              "Error while deserializing header: incomplete metadata, file not fully covered)"),
    "empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "weights file {d}/model.safetensors is empty"),
    "config not JSON": (lambda d: (d / "config.json").write_text('{\n  "model_type": vit\n}'),
                        "weights config {d}/config.json:2 is not valid JSON (Expecting value)"),
    "config of a BERT": (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64})),
                         "weights config {d}/config.json is of model_type 'bert', not a ViT ('vit')"),
    "no weights file": (lambda d: (d / "model.safetensors").unlink(),
                        "weights folder {d} holds config.json but no weights file (none of model.safetensors,"),
    "no config": (lambda d: (d / "config.json").unlink(), "weights folder '{d}' holds no config.json"),
    "another architecture's config": (
        lambda d: (d / "config.json").write_text((d / "config.json").read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')),
        "weights config {d}/config.json: architecture (64, 3, 4, 128, 32, 8) (hidden, layers, heads, intermediate, "
        "image, patch), preset 'vit-tiny' expects (64, 2, 4, 128, 32, 8)"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_weights_folder_is_one_line_naming_the_file_before_anything_launches(saved, tmp_path, case):
    breaks, needle = CASES[case]
    d = _copy(saved, tmp_path)
    breaks(d)
    with pytest.raises(ConfigError) as e:
        preflight.check_weights(str(d), "vit-tiny")
    assert needle.format(d=d) in str(e.value) and "\n" not in str(e.value)


def test_tensors_of_another_shape_than_the_preset_are_named_not_reinitialised(saved, tmp_path):
    d = _copy(saved, tmp_path)  # vit-tiny's config, the weights of a ViT with a wider MLP
    shutil.copy(saved["wide"] / "model.safetensors", d / "model.safetensors")
    with pytest.raises(ConfigError, match=r"model.safetensors: 6 tensor\(s\) do not have the shapes of preset "
                                          r"'vit-tiny' \(encoder.layer.0.intermediate.dense.bias \(256,\) in the "
                                          r"file, \(128,\) expected"):
        preflight.check_weights(str(d), "vit-tiny")
    # build_model, where the check was not made (or the file changed since), says it too
    with pytest.raises(ConfigError, match=r"6 tensor\(s\) have other shapes than preset 'vit-tiny' "
                                          r"\(vit.encoder.layer.0.intermediate.dense.bias"):
        model.build_model(TINY, labels=LABELS, weights=str(d))
    # and a whole folder of the wider ViT is another architecture
    with pytest.raises(ConfigError, match=r"config.json: architecture \(64, 2, 4, 256, 32, 8\)"):
        preflight.check_weights(str(saved["wide"]), "vit-tiny")


def test_pytorch_model_bin_is_read_too(saved, tmp_path):
    preflight.check_weights(str(saved["bin"]), "vit-tiny")
    d = _copy(saved, tmp_path, "bin")
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=rf"^weights file {d}/pytorch_model.bin is corrupt or truncated "
                                          r"\(RuntimeError: PytorchStreamReader failed"):
        preflight.check_weights(str(d), "vit-tiny")


def test_a_whole_folder_passes_and_loads(saved):
    preflight.check_weights(str(saved["good"]), "vit-tiny")
    vit, source = model.build_model(TINY, labels=LABELS, weights=str(saved["good"]))
    assert source == f"pretrained:{saved['good']}"
    with pytest.raises(ConfigError, match=r"preset 'vit-base' expects \(768, 12, 12, 3072, 224, 16\)"):
        preflight.check_weights(str(saved["good"]), "vit-base")


def test_build_model_turns_a_load_failure_into_one_line_naming_the_file(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _garbage(d)
    with pytest.raises(ConfigError) as e:
        model.build_model(TINY, labels=LABELS, weights=str(d))
    assert str(e.value).startswith(f"weights pretrained:{d}: {d}/model.safetensors cannot be loaded (SafetensorError: "
                                   "Error while deserializing header: header too large); ")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_vitcore_train_with_a_corrupt_checkpoint_ends_in_one_error_line_exit_2(saved, tmp_path):
    """The issue's command, as a user runs it."""
    d = _copy(saved, tmp_path)
    _garbage(d)
    p = subprocess.run([sys.executable, "-m", "vitcore.cli", "train", "--device", "cpu", "--model", "vit-tiny",
                        "--weights", str(d), "--epochs", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("vitcore: error: ")]
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "[rank0]" not in p.stderr, p.stderr[-3000:]
    assert errors == [lines[-1]] and errors[0].startswith(
        f"vitcore: error: weights file {d}/model.safetensors is corrupt or truncated (SafetensorError: Error while "
        "deserializing header: header too large)"), p.stderr[-3000:]
