import collections

import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vitcore import DataError
from vitcore.inputs import data


@pytest.fixture(scope="module")
def small():
    return data.load("embedded", subset=90)


@pytest.mark.slow
def test_embedded_schema_and_split_ratio():
    full = data.load("embedded")
    assert len(full.train) == 2250 and len(full.test) == 750
    assert full.labels == ["chicken", "dog", "muffin"]
    assert full.train.features["label"].names == data.LABELS
    assert full.train.features["image"].__class__.__name__ == "Image"
    assert full.source.startswith("embedded:synthetic-dog-food")


def test_embedded_is_deterministic_and_varied(small):
    again = data.load("embedded", subset=90)
    a, b = small.train[5]["image"], again.train[5]["image"]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    sizes = {small.train[i]["image"].size for i in range(30)}
    assert len(sizes) > 20, "images should vary in size and aspect ratio"
    assert len({w / h for w, h in sizes}) > 20


def test_embedded_class_is_not_in_mean_colour(small):
    # If a class were a colour, a nearest-mean classifier on mean RGB would beat chance easily.
    means = np.array([np.asarray(r["image"], dtype=float).mean((0, 1)) for r in small.train])
    labels = np.array(small.train["label"])
    centroids = np.stack([means[labels == c].mean(0) for c in range(3)])
    pred = np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels).mean() < 0.55


def test_subset_is_stratified(small):
    assert len(small.train) == 90 and len(small.test) == 30
    assert collections.Counter(small.train["label"]) == {0: 30, 1: 30, 2: 30}
    assert "subset=90" in small.source


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=300), data_=st.data())
def test_stratified_indices_properties(labels, data_):
    n = data_.draw(st.integers(1, len(labels)))
    idx = data.stratified_indices(labels, n, seed=3)
    assert len(idx) == n == len(set(idx)) and all(0 <= i < len(labels) for i in idx)
    assert idx == data.stratified_indices(labels, n, seed=3)
    full, got = collections.Counter(labels), collections.Counter(labels[i] for i in idx)
    for c, count in full.items():
        assert abs(got[c] - count * n / len(labels)) < 1 + 1e-9


@pytest.mark.parametrize("n", [0, -1, 10_000])
def test_stratified_indices_range(n):
    with pytest.raises(DataError, match=f"subset {n} is out of range"):
        data.stratified_indices([0, 1, 2], n)


def test_preprocessing_shapes(small):
    ds = data.Preprocessed(small.train, data.image_processor(32))
    item = ds[0]
    assert item["pixel_values"].shape == (3, 32, 32)
    assert -1.01 <= float(item["pixel_values"].min()) and float(item["pixel_values"].max()) <= 1.01
    assert int(item["labels"]) in (0, 1, 2)
    assert data.Preprocessed(small.train, data.image_processor(224))[0]["pixel_values"].shape == (3, 224, 224)


def _image_folder(root, per_class=4, labels=data.LABELS):
    for c, name in enumerate(labels):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            data.embedded_image(c % 3, "train", i).save(root / name / f"{i}.png")
    return root


def test_local_image_folder(tmp_path):
    d = data.load(str(_image_folder(tmp_path / "df")))
    assert d.labels == data.LABELS and d.source.startswith("local-imagefolder:")
    assert len(d.train) + len(d.test) == 12
    assert collections.Counter(d.test["label"]) == {0: 1, 1: 1, 2: 1}


def test_local_save_to_disk(tmp_path):
    src = data.load("embedded", subset=30)
    datasets.DatasetDict({"train": src.train, "test": src.test}).save_to_disk(str(tmp_path / "disk"))
    d = data.load(str(tmp_path / "disk"), subset=15)
    assert d.source.startswith("local-disk:") and len(d.train) == 15


def test_corrupt_image_is_named(tmp_path):
    root = _image_folder(tmp_path / "df")
    bad = root / "dog" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="corrupt image file .*broken.jpg"):
        data.load(str(root))


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does-not-exist.* does not exist"):
        data.load(str(tmp_path / "does-not-exist"))


def test_a_folder_of_other_classes_loads_with_its_own_labels(tmp_path):
    """Any folder of photographs (the convergence check on a user's own data, issue 15)."""
    d = data.load(str(_image_folder(tmp_path / "df", labels=["cat", "dog", "muffin"])))
    assert d.labels == ["cat", "dog", "muffin"] and len(d.train) + len(d.test) == 12


def test_a_one_class_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"has 1 class folder\(s\) \['cat'\]; a classifier needs at least 2"):
        data.load(str(_image_folder(tmp_path / "df", labels=["cat"])))


def test_a_saved_dataset_keeps_dog_food_labels(tmp_path):
    ds = datasets.Dataset.from_dict({"image": [data.embedded_image(0, "train", 0)], "label": [0]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["cat", "dog", "muffin"])}))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"labels \['cat', 'dog', 'muffin'\]; dog_food needs"):
        data.load(str(tmp_path / "saved"))


def test_explicit_hub_dataset_never_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match="'lewtun/dog_food' is not available"):
        data._load_hub("lewtun/dog_food")


def test_auto_fallback_is_loud(monkeypatch, caplog):
    def unavailable(repo):
        raise DataError(f"dataset {repo!r} is not available")

    monkeypatch.setattr(data, "_load_hub", unavailable)
    d = data.load("auto", subset=30)
    assert "embedded" in d.source and "not available offline" in d.source
    assert "EMBEDDED" in caplog.text


def test_decode_error_names_the_file(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    ds = datasets.Dataset.from_dict({"image": [str(path)], "label": [0]}).cast_column("image", datasets.Image())
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot decode image .*x.png"):
        data.Preprocessed(ds, data.image_processor(32))[0]


@pytest.fixture
def decode_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCORE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / data.DECODED_CACHE


def test_truncated_jpeg_passes_verify_and_is_caught_up_front(tmp_path, decode_cache):
    root = _image_folder(tmp_path / "df")
    bad = root / "muffin" / "cut.jpg"
    data.embedded_image(2, "train", 0).resize((256, 256)).save(bad, "JPEG")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a download cut off half-way
    with Image.open(bad) as im:
        im.verify()  # what the up-front check used to rely on: it passes
    with pytest.raises(DataError, match=r"corrupt image file '.*cut.jpg': image file is truncated"):
        data.load(str(root))
    with pytest.raises(DataError, match="cut.jpg"):
        data.split_sizes(str(root))  # what `vitcore train` checks before it starts


def test_each_image_is_decoded_once_then_remembered_by_size_and_mtime(tmp_path, decode_cache, monkeypatch):
    root = _image_folder(tmp_path / "df")
    decoded = []
    real = data._decode_fully
    monkeypatch.setattr(data, "_decode_fully", lambda src, name: decoded.append(name) or real(src, name))
    data.split_sizes(str(root))
    assert len(decoded) == 12 and decode_cache.exists()
    decoded.clear()
    data.load(str(root))
    assert decoded == []  # a re-run is instant
    touched = root / "dog" / "0.png"
    data.embedded_image(1, "train", 7).save(touched)
    data.load(str(root))
    assert decoded == [str(touched)]


def test_rows_of_a_saved_dataset_are_decoded_and_named(tmp_path, decode_cache):
    src = data.load("embedded", subset=15)
    rows = {"image": [{"bytes": b"\xff\xd8 not really a jpeg", "path": "x.jpg"}] + list(src.train["image"]),
            "label": [0] + list(src.train["label"])}
    train = datasets.Dataset.from_dict(rows, features=src.train.features)
    datasets.DatasetDict({"train": train, "test": src.test}).save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(DataError, match=r"corrupt image file 'local-disk:.*disk train row 0 \(x.jpg\)'"):
        data.load(str(tmp_path / "disk"))


@pytest.mark.parametrize("subset,sizes", [(None, (2250, 750)), (30, (30, 10)), (2250, (2250, 750))])
def test_split_sizes_of_the_embedded_data_without_drawing_it(subset, sizes):
    assert data.split_sizes("embedded", subset=subset) == sizes


def test_split_sizes_checks_the_subset():
    with pytest.raises(DataError, match=r"subset 2251 is out of range; valid: 1..2250"):
        data.split_sizes("embedded", subset=2251)
