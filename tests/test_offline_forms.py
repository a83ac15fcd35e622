"""The real dataset and the pretrained weights from every offline form a user has (docs/offline.md).

Each form is built here, in a temporary HF cache, with dog_food's exact schema (image = Image(),
label = ClassLabel[chicken, dog, muffin], splits train/test), and loaded with the hub offline through
the entry points the CLI uses (`data.load` / `data.split_sizes` with `lewtun/dog_food` or a path;
`model.check_weights` / `model.build_model` for the weights). Every image is a solid colour of its
class with a size of its own, so each row's label is checked against the image written for it.
"""

import dataclasses
import hashlib
import io
import os
import shutil

import datasets
import huggingface_hub.constants as hfc
import numpy as np
import pytest
import torch
from PIL import Image

from vitcore import ConfigError, DataError
from vitcore.inputs import data, model

HUB_ID = "lewtun/dog_food"
WEIGHTS_ID = "google/vit-base-patch16-224-in21k"
REV = "0123456789abcdef0123456789abcdef01234567"
PER_CLASS = {"train": 4, "test": 2}
COLOURS = {"chicken": (230, 40, 40), "dog": (40, 230, 40), "muffin": (40, 40, 230)}
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=data.LABELS)})


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """An empty HF home with the hub offline, as HF_HUB_OFFLINE=1 gives it. The libraries read these
    variables at import; vitcore reads them at each call (vitcore.inputs.hub_cache), which is what this tests."""
    home = tmp_path / "hf"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITCORE_CACHE_DIR", str(tmp_path / "vitcore-cache"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)  # restored after the test; vitcore sets both
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return home


def _images(split):
    """[(file name, encoded bytes, label)]: JPEG and PNG, each image a size no other image has."""
    out = []
    for c, name in enumerate(data.LABELS):
        for i in range(PER_CLASS[split]):
            k = len(out) + (100 if split == "test" else 0)
            fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
            buf = io.BytesIO()
            Image.new("RGB", (16 + k, 20 + k), COLOURS[name]).save(buf, fmt)
            out.append((f"{name}-{i}.{ext}", buf.getvalue(), c))
    return out


def _written():
    """{(split, image size): label} of every image written."""
    return {(s, Image.open(io.BytesIO(b)).size): c for s in PER_CLASS for _, b, c in _images(s)}


def _assert_dog_food(d, source_prefix):
    assert d.labels == data.LABELS and d.source.startswith(source_prefix), d.source
    assert d.train.features["label"].names == data.LABELS
    assert (len(d.train), len(d.test)) == (3 * PER_CLASS["train"], 3 * PER_CLASS["test"])
    written, seen = _written(), set()
    for split, ds in (("train", d.train), ("test", d.test)):
        for row in ds:
            img = row["image"].convert("RGB")
            key = (split, img.size)
            assert written[key] == row["label"], f"{key} came back as {data.LABELS[row['label']]}"
            assert int(np.argmax(np.asarray(img, dtype=float).mean((0, 1)))) == row["label"]  # its colour
            seen.add(key)
    assert seen == set(written), "every image written comes back once"


def _dataset_dict():
    return datasets.DatasetDict({
        s: datasets.Dataset.from_dict({"image": [{"bytes": b, "path": f} for f, b, _ in _images(s)],
                                       "label": [c for _, _, c in _images(s)]}, features=FEATURES)
        for s in PER_CLASS})


def _readme(train_rows, test_rows):
    names = "".join(f"          '{i}': {n}\n" for i, n in enumerate(data.LABELS))
    return (f"---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n  - name: label\n"
            f"    dtype:\n      class_label:\n        names:\n{names}  splits:\n"
            f"  - name: train\n    num_examples: {train_rows}\n  - name: test\n    num_examples: {test_rows}\n"
            "---\n# dog_food (generated for the test)\n")


def _hub_file(repo, rel, content: bytes, rev=REV):
    """One file as huggingface_hub stores it: the content in blobs/, a link in snapshots/REV/."""
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    link = repo / "snapshots" / rev / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def _snapshot(hub, *, splits=("train", "test"), readme=True, ref=True):
    """What `huggingface-cli download lewtun/dog_food --repo-type dataset` leaves in HUB."""
    repo = hub / "datasets--lewtun--dog_food"
    for split in splits:
        buf = io.BytesIO()
        _dataset_dict()[split].to_parquet(buf)
        _hub_file(repo, f"data/{split}-00000-of-00001.parquet", buf.getvalue())
    if readme:
        _hub_file(repo, "README.md", _readme(3 * PER_CLASS["train"], 3 * PER_CLASS["test"]).encode())
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REV)
    return repo / "snapshots" / REV


# --- the dataset, form by form ----------------------------------------------------------------------
@pytest.mark.parametrize("readme", [True, False], ids=["with-readme", "parquet-only"])
def test_hub_snapshot_is_loaded_directly_offline(hf, readme):
    snap = _snapshot(hf / "hub", readme=readme)
    d = data.load(HUB_ID)
    _assert_dog_food(d, f"hf-snapshot:{HUB_ID}@{REV} (hub snapshot {snap})")
    assert data.split_sizes(HUB_ID) == (12, 6)  # what `vitcore train` checks before it starts
    assert data.load("auto").source == d.source  # auto finds it too: no fallback to the embedded data


def test_hub_snapshot_in_hf_hub_cache_without_refs(hf, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # wins over $HF_HOME/hub
    snap = _snapshot(tmp_path / "elsewhere", ref=False)  # a copied snapshots/ folder: the only revision
    _assert_dog_food(data.load(HUB_ID), f"hf-snapshot:{HUB_ID}@{REV} (hub snapshot {snap})")


def test_datasets_prepared_cache(hf, tmp_path):
    # Prepared as load_dataset does online (lewtun___dog_food/default/0.0.0/REV/dog_food-*.arrow),
    # from a snapshot outside the hub cache, so the prepared cache is the only form there is.
    snap = _snapshot(tmp_path / "not-the-hub-cache")
    first = datasets.load_dataset_builder(str(snap), cache_dir=str(tmp_path / "scratch"))
    builder = type(first)(cache_dir=str(hf / "datasets"), dataset_name="dog_food", repo_id=HUB_ID, hash=REV,
                          config_name="default", base_path=str(snap), info=first.info)
    builder.download_and_prepare()
    shutil.rmtree(tmp_path / "not-the-hub-cache")
    d = data.load(HUB_ID)
    _assert_dog_food(d, f"hf-datasets-cache:{HUB_ID} ({hf / 'datasets' / 'lewtun___dog_food'}")


def test_save_to_disk_copy(hf, tmp_path):
    _dataset_dict().save_to_disk(str(tmp_path / "dog_food"))
    _assert_dog_food(data.load(str(tmp_path / "dog_food")), f"local-disk:{tmp_path / 'dog_food'}")


def test_image_folder_with_splits(hf, tmp_path):
    root = tmp_path / "dog_food"
    for split in PER_CLASS:
        for f, b, c in _images(split):
            (root / split / data.LABELS[c]).mkdir(parents=True, exist_ok=True)
            (root / split / data.LABELS[c] / f).write_bytes(b)
    d = data.load(str(root))
    _assert_dog_food(d, f"local-imagefolder:{root}")
    assert d.source == f"local-imagefolder:{root}"  # its own test split, no stratified one


# --- bad or incomplete forms: one line naming the folder and what is missing ---------------------------
def test_nothing_offline_names_both_places(hf):
    with pytest.raises(DataError, match=r"'lewtun/dog_food' is not available offline .*not in the datasets "
                                         r"cache .*hf/datasets.*no hub snapshot in .*datasets--lewtun--dog_food"):
        data.load(HUB_ID)


def _break_refs(snap):
    (snap.parent.parent / "refs" / "main").write_text("feedbeef")


def _second_revision(snap):
    (snap.parent.parent / "refs" / "main").unlink()
    shutil.copytree(snap, snap.parent / "other", symlinks=True)


def _drop_blobs(snap):
    shutil.rmtree(snap.parent.parent / "blobs")


def _drop_test(snap):
    (snap / "data" / "test-00000-of-00001.parquet").unlink()


def _short_test(snap):
    readme = snap / "README.md"
    text = readme.read_text().replace("num_examples: 6", "num_examples: 7")
    readme.unlink()
    readme.write_text(text)


def _no_data(snap):
    shutil.rmtree(snap / "data")


@pytest.mark.parametrize("damage,message", [
    (_break_refs, r"datasets--lewtun--dog_food: refs/main names revision 'feedbeef' but snapshots/feedbeef is missing"),
    (_second_revision, r"datasets--lewtun--dog_food holds snapshots 0123.*, other and no refs/main"),
    (_drop_blobs, r"hub snapshot .*/snapshots/0123\S*: README.md \(and 2 more\) links to a missing blob; "
                  r"copy the whole datasets--lewtun--dog_food folder, blobs/ included"),
    (_drop_test, r"hub snapshot .*/snapshots/0123\S* cannot be loaded: README.md declares split\(s\) \{'test'\}"),
    (_short_test, r"hub snapshot .* cannot be loaded: split 'test' has 6 rows where README.md declares 7"),
    (_no_data, r"hub snapshot .*/snapshots/0123\S* holds no data files"),
])
def test_bad_hub_snapshot_is_one_line(hf, damage, message):
    damage(_snapshot(hf / "hub"))
    with pytest.raises(DataError, match=message) as e:
        data.load(HUB_ID)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("missing,message", [
    ("test", r"save_to_disk folder .*dog_food is incomplete: test/state.json is missing"),
    ("train/data-00000-of-00001.arrow", r"is incomplete: train/data-00000-of-00001.arrow is missing"),
])
def test_incomplete_save_to_disk_copy(hf, tmp_path, missing, message):
    _dataset_dict().save_to_disk(str(tmp_path / "dog_food"))
    target = tmp_path / "dog_food" / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "dog_food"))


# --- the weights --------------------------------------------------------------------------------------
TINY = dataclasses.replace(model.PRESETS["vit-tiny"], pretrained_id=WEIGHTS_ID)


def _saved_vit(hub, tmp_path, *, safetensors=True, files=None):
    """A ViT of vit-tiny's architecture, saved as in21k's snapshot (ViTModel: no classifier)."""
    from transformers import ViTModel

    torch.manual_seed(7)
    cfg = TINY.hf_config(num_labels=3, id2label=dict(enumerate(data.LABELS)), attention="eager")
    vit = ViTModel(cfg, add_pooling_layer=True)
    vit.save_pretrained(tmp_path / "saved", safe_serialization=safetensors)
    repo = hub / f"models--{WEIGHTS_ID.replace('/', '--')}"
    for f in sorted((tmp_path / "saved").iterdir()):
        if files is None or f.name in files:
            _hub_file(repo, f.name, f.read_bytes())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return vit, repo / "snapshots" / REV


@pytest.mark.parametrize("safetensors", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_weights_from_a_hub_snapshot(hf, tmp_path, safetensors):
    saved, snap = _saved_vit(hf / "hub", tmp_path, safetensors=safetensors)
    vit, source = model.build_model(TINY, labels=data.LABELS, weights="auto")  # `--weights auto`
    assert source == f"pretrained:{WEIGHTS_ID}@{REV} (hub snapshot {snap})"
    want = saved.embeddings.patch_embeddings.projection.weight
    assert torch.equal(vit.vit.embeddings.patch_embeddings.projection.weight, want)  # not a random init
    model.check_weights(WEIGHTS_ID)  # `--weights google/vit-base-patch16-224-in21k`, checked up front
    _, named = model.build_model(model.PRESETS["vit-tiny"], labels=data.LABELS, weights=WEIGHTS_ID)
    assert named == source


def test_weights_auto_without_a_snapshot_is_random_and_says_so(hf, caplog):
    _, source = model.build_model(TINY, labels=data.LABELS, weights="auto")
    assert source.startswith(f"random-init ({WEIGHTS_ID} not in the HF cache (")
    assert str(hf / "hub" / "models--google--vit-base-patch16-224-in21k") in source
    assert "RANDOMLY INITIALISED" in caplog.text
    with pytest.raises(ConfigError, match=f"weights '{WEIGHTS_ID}': no such folder, and not in the HF cache"):
        model.check_weights(WEIGHTS_ID)


@pytest.mark.parametrize("weights", ["auto", WEIGHTS_ID])
def test_incomplete_weights_snapshot_is_an_error_not_random_weights(hf, tmp_path, weights):
    _saved_vit(hf / "hub", tmp_path, files={"config.json"})  # the download stopped after config.json
    with pytest.raises(ConfigError, match=r"hub snapshot .*/snapshots/0123\S* holds config.json but none of "
                                          r"model.safetensors, pytorch_model.bin"):
        model.build_model(TINY, labels=data.LABELS, weights=weights)
