"""Data that changes or hides things: hidden files and folders, a `folder` dataset changed
after preparation, an archive replaced after a failed extraction, a configured split that
does not exist."""

import logging
import os

import pytest

from fgvc_jax import data
from fgvc_jax.data import datasets
from fgvc_jax.data.builders import base
from tests.data import fakes
from tests.data.test_builders import _assert_prepared, _config


@pytest.fixture(autouse=True)
def _fresh_builders():
    """Each `prepare` below looks at the files again, as a new process does."""
    datasets._BUILDERS.clear()
    yield
    datasets._BUILDERS.clear()


def test_hidden_files_and_folders_ignored(tmp_path):
    root = tmp_path / "mine"
    names, expected = fakes.class_folders(root)
    fakes.jpeg(root / "train" / ".ipynb_checkpoints" / "img_0-checkpoint.jpg", seed=1)
    fakes.jpeg(root / ".hidden" / "Acer" / "img_0.jpg", seed=2)  # not a split
    fakes.jpeg(root / "test" / "Betula" / ".img_9.jpg", seed=3)  # not an image of the class
    (root / "train" / "Acer" / ".DS_Store").write_bytes(b"\0\1junk")
    config = _config("folder", tmp_path, folder_root=str(root))
    info = _assert_prepared(config, names, expected)
    assert set(info.num_examples) == {"train", "test"}


def test_hidden_files_in_release_not_reported(tmp_path, caplog):
    fakes.cub(tmp_path / "manual", classes=2, per_class=2)
    images = tmp_path / "manual" / "CUB_200_2011" / "images"
    fakes.jpeg(images / ".thumbnails" / "t.jpg", seed=1)
    fakes.jpeg(images / "001.Bird_A" / "._Bird_A_0000_0.jpg", seed=2)
    with caplog.at_level(logging.WARNING):
        data.prepare(_config("cub", tmp_path))
    assert "in no list file" not in caplog.text


def test_changed_folder_is_rebuilt_with_a_message(tmp_path, caplog):
    root = tmp_path / "mine"
    names, expected = fakes.class_folders(root)
    config = _config("folder", tmp_path, folder_root=str(root))
    _assert_prepared(config, names, expected)
    fakes.jpeg(root / "train" / "Acer" / "new.jpg", seed=7)  # an image added
    for split in ("train", "test"):  # and a class
        fakes.jpeg(root / split / "Dryas" / "img_0.jpg", seed=8)
    expected["train"]["train/Acer/new.jpg"] = 0
    expected["train"]["train/Dryas/img_0.jpg"] = 3
    expected["test"]["test/Dryas/img_0.jpg"] = 3
    datasets._BUILDERS.clear()
    with caplog.at_level(logging.WARNING):
        _assert_prepared(config, names + ["Dryas"], expected)
    assert f"The folder {root} changed since its dataset was prepared" in caplog.text
    assert "rebuilding" in caplog.text


def test_modified_image_is_noticed(tmp_path, caplog):
    root = tmp_path / "mine"
    names, expected = fakes.class_folders(root)
    config = _config("folder", tmp_path, folder_root=str(root))
    data.prepare(config)
    fakes.jpeg(root / "test" / "Acer" / "img_0.jpg", seed=99, size=(41, 30))  # replaced
    datasets._BUILDERS.clear()
    with caplog.at_level(logging.WARNING):
        _assert_prepared(config, names, expected)
    assert "changed since its dataset was prepared" in caplog.text


def test_unchanged_folder_is_reused(tmp_path, caplog):
    root = tmp_path / "mine"
    fakes.class_folders(root)
    config = _config("folder", tmp_path, folder_root=str(root))
    data.prepare(config)
    built = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "tfds").rglob("*.array_record*")}
    datasets._BUILDERS.clear()
    with caplog.at_level(logging.WARNING):
        data.prepare(config)
    assert "changed since its dataset was prepared" not in caplog.text
    assert built and built == {p: os.stat(p).st_mtime_ns for p in built}


def test_truncated_archive_replaced_by_good_copy_is_extracted_again(tmp_path):
    (tmp_path / "manual").mkdir()
    names, expected = fakes.cub(tmp_path / "work")
    good = fakes.tar(tmp_path / "work" / "CUB_200_2011", tmp_path / "good.tgz").read_bytes()
    archive = tmp_path / "manual" / "CUB_200_2011.tgz"
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(data.DataError, match=f"Cannot extract {archive}"):
        data.prepare(_config("cub", tmp_path))
    archive.write_bytes(good)
    datasets._BUILDERS.clear()
    _assert_prepared(_config("cub", tmp_path), names, expected)


def test_changed_archive_is_extracted_again(tmp_path, caplog):
    dest = tmp_path / "extracted"
    archive = tmp_path / "release.tar"
    (tmp_path / "v1" / "release").mkdir(parents=True)
    (tmp_path / "v1" / "release" / "old.txt").write_text("one")
    fakes.tar(tmp_path / "v1" / "release", archive)
    base.extract(archive, dest)
    assert (dest / "release" / "old.txt").read_text() == "one"
    with caplog.at_level(logging.WARNING):
        base.extract(archive, dest)  # unchanged: not extracted again
    assert "extracting it again" not in caplog.text
    (tmp_path / "v2" / "release").mkdir(parents=True)
    (tmp_path / "v2" / "release" / "new.txt").write_text("two, longer")
    fakes.tar(tmp_path / "v2" / "release", archive)
    with caplog.at_level(logging.WARNING):
        base.extract(archive, dest)
    assert f"{archive} changed since it was extracted" in caplog.text
    assert sorted(p.name for p in (dest / "release").iterdir()) == ["new.txt"]
    assert [p.name for p in base.visible(dest)] == ["release"]  # no temporary folder left


def test_missing_test_split_fails_before_training(tmp_path):
    root = tmp_path / "mine"
    fakes.class_folders(root, splits=("train", "val"))
    config = _config("folder", tmp_path, folder_root=str(root))
    with pytest.raises(
        data.DataError,
        match=r"config\.test_split='test': dataset 'folder' has "
        r"no split 'test'; it has train, val",
    ) as e:
        data.prepare(config)
    assert str(root) in str(e.value)
    config.test_split = "val"
    config.train_split = "train[:50%]+trainval"
    with pytest.raises(data.DataError, match="config.train_split=.* no split 'trainval'"):
        data.prepare(config)
    config.train_split = "train[:50%]"
    assert data.prepare(config).num_examples == {"train": 9, "val": 12}


def test_trainer_stops_before_training_without_the_test_split(tmp_path):
    """The trainer's first step, `Experiment`, prepares the data: it fails there."""
    import importlib

    from fgvc_jax.loop import experiment

    root = tmp_path / "mine"
    fakes.class_folders(root, splits=("train", "val"))
    config = importlib.import_module("configs.attention_cnn").get_config("synthetic")
    config.data = _config("folder", tmp_path, folder_root=str(root))
    with pytest.raises(data.DataError, match="no split 'test'"):
        experiment.Experiment(config)
