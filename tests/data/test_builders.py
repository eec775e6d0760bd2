"""Each project builder, built from a tiny copy of the release in its official layout."""

import io

import numpy as np
import pytest
from PIL import Image

from fgvc_jax import data
from fgvc_jax.data import datasets
from tests.data import fakes


def _config(name, tmp_path, **overrides):
    c = data.default_config(name)
    c.data_dir = str(tmp_path / "tfds")
    c.manual_dir = str(tmp_path / "manual")
    c.download = False
    for k, v in overrides.items():
        c[k] = v
    return c


def _records(config, split):
    source = datasets.data_source(config, split)
    return [source[i] for i in range(len(source))]


def _assert_prepared(config, names, expected, prefix=""):
    """Counts, class names, labels and split membership of the prepared dataset."""
    info = data.prepare(config)
    assert info.class_names == names
    assert info.num_classes == len(names)
    assert info.num_examples == {s: len(files) for s, files in expected.items()}
    for split, files in expected.items():
        got = {r["filename"].decode(): r["label"] for r in _records(config, split)}
        assert got == {prefix + f: label for f, label in files.items()}, split
    return info


@pytest.fixture
def manual(tmp_path):
    (tmp_path / "manual").mkdir()
    return tmp_path / "manual"


def test_cub_from_archive(tmp_path, manual):
    names, expected = fakes.cub(tmp_path / "work")
    fakes.tar(tmp_path / "work" / "CUB_200_2011", manual / "CUB_200_2011.tgz")
    _assert_prepared(_config("cub", tmp_path), names, expected)


def test_cub_from_extracted_folder(tmp_path, manual):
    names, expected = fakes.cub(manual, classes=2, per_class=3)
    _assert_prepared(_config("cub", tmp_path), names, expected)


def test_stanford_dogs(tmp_path, manual):
    names, expected = fakes.stanford_dogs(manual)
    _assert_prepared(_config("stanford_dogs", tmp_path), names, expected)


@pytest.mark.parametrize("archives", [True, False])
def test_stanford_cars(tmp_path, manual, archives):
    names, expected = fakes.stanford_cars(manual, archives=archives)
    _assert_prepared(_config("stanford_cars", tmp_path), names, expected)


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_fgvc_aircraft_levels_and_banner(tmp_path, manual, level):
    expected = fakes.fgvc_aircraft(manual)[level]
    names = list(
        dict.fromkeys(
            row[("variant", "family", "manufacturer").index(level)] for row in fakes.AIRCRAFT
        )
    )
    config = _config("fgvc_aircraft", tmp_path, label_level=level)
    config.train_split = "trainval"
    info = _assert_prepared(config, names, expected)
    assert set(info.num_examples) == {"train", "val", "trainval", "test"}
    image = Image.open(io.BytesIO(_records(config, "test")[0]["image"]))
    assert image.size == (40, 50 - 20)  # the 20-pixel banner is cut off


def test_nabirds_leaf_classes_remapped(tmp_path, manual):
    names, expected = fakes.nabirds(manual)
    info = _assert_prepared(_config("nabirds", tmp_path), names, expected)
    assert info.class_names == [
        "Species 295 (Adult)",
        "Species 817 (Adult)",
        "Species 1010 (Adult)",
    ]


@pytest.mark.parametrize("kind", ["bird", "aircraft", "car"])
def test_webfg(tmp_path, manual, kind):
    names, found = fakes.class_folders(tmp_path / "work" / f"web-{kind}", splits=("train", "val"))
    fakes.tar(tmp_path / "work" / f"web-{kind}", manual / f"web-{kind}.tar.gz")
    _assert_prepared(
        _config(f"webfg_{kind}", tmp_path), names, {"train": found["train"], "test": found["val"]}
    )


def test_user_folder(tmp_path):
    names, expected = fakes.class_folders(tmp_path / "mine", splits=("train", "val", "test"))
    config = _config("folder", tmp_path, folder_root=str(tmp_path / "mine"))
    _assert_prepared(config, names, expected)


def test_grayscale_and_png_stored_as_rgb(tmp_path):
    names, expected = fakes.class_folders(tmp_path / "mine")
    Image.new("L", (20, 10), 128).save(tmp_path / "mine" / "train" / "Acer" / "img_0.jpg")
    Image.new("RGB", (12, 8), (1, 2, 3)).save(tmp_path / "mine" / "test" / "Acer" / "x.png")
    expected["test"]["test/Acer/x.png"] = 0
    config = _config("folder", tmp_path, folder_root=str(tmp_path / "mine"))
    _assert_prepared(config, names, expected)
    for split in ("train", "test"):
        for r in _records(config, split):
            image = Image.open(io.BytesIO(r["image"]))
            assert image.mode == "RGB" and image.format in ("JPEG", "PNG")  # PNG: lossless


def test_prepare_is_idempotent(tmp_path, manual):
    names, expected = fakes.cub(manual, classes=2, per_class=2)
    config = _config("cub", tmp_path)
    first = data.prepare(config)
    datasets._BUILDERS.clear()
    (manual / "CUB_200_2011" / "images.txt").unlink()  # not read again once prepared
    assert data.prepare(config) == first


def test_synthetic_prepare(tmp_path):
    config = _config("synthetic_fgvc", tmp_path)
    config.synthetic.update(dict(num_classes=5, train_per_class=4, test_per_class=2))
    info = data.prepare(config)
    assert info.num_classes == 5 and len(set(info.class_names)) == 5
    assert info.num_examples == {"train": 20, "test": 10}
    labels = sorted(r["label"] for r in _records(config, "train"))
    assert labels == sorted(list(range(5)) * 4)
    image = np.asarray(Image.open(io.BytesIO(_records(config, "test")[0]["image"])))
    assert image.shape == (64, 64, 3)
