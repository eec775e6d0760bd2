"""User mistakes give one DataError that names the file or folder and what was expected."""

import logging

import pytest
import scipy.io

from fgvc_jax import data
from tests.data import fakes
from tests.data.test_builders import _config


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="cub.*stanford_cars.*folder"):
        data.default_config("cub2011")


def test_missing_dataset_names_files_and_folder(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.prepare(_config("stanford_cars", tmp_path))
    message = str(e.value)
    for expected in (
        "cars_train",
        "cars_test",
        "cars_meta.mat",
        "cars_test_annos_withlabels.mat",
        str(tmp_path / "manual"),
    ):
        assert expected in message


def test_missing_folder_root(tmp_path):
    with pytest.raises(data.DataError, match="folder_root"):
        data.prepare(_config("folder", tmp_path))


def _corrupt_cub(tmp_path):
    names, expected = fakes.cub(tmp_path / "manual")
    bad = tmp_path / "manual" / "CUB_200_2011" / next(iter(expected["train"]))
    bad.write_bytes(bad.read_bytes()[:100])  # a truncated JPEG
    return bad, expected


def test_corrupt_jpeg_fails_before_writing(tmp_path):
    bad, _ = _corrupt_cub(tmp_path)
    with pytest.raises(data.DataError, match=r"1 of 12 images.*unreadable") as e:
        data.prepare(_config("cub", tmp_path))
    assert str(bad) in str(e.value) and "skip_corrupt" in str(e.value)
    assert not list((tmp_path / "tfds").rglob("*.array_record*"))


def test_corrupt_jpeg_skipped_with_warning(tmp_path, caplog):
    bad, expected = _corrupt_cub(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = data.prepare(_config("cub", tmp_path, skip_corrupt=True))
    assert info.num_examples == {"train": len(expected["train"]) - 1, "test": len(expected["test"])}
    assert str(bad) in caplog.text and "skipping 1 of 12" in caplog.text


def test_missing_listed_image(tmp_path):
    _, expected = fakes.cub(tmp_path / "manual")
    gone = tmp_path / "manual" / "CUB_200_2011" / next(iter(expected["test"]))
    gone.unlink()
    with pytest.raises(data.DataError, match="missing") as e:
        data.prepare(_config("cub", tmp_path))
    assert f"{gone}: missing" in str(e.value)


def test_label_file_disagrees_with_folder(tmp_path):
    fakes.cub(tmp_path / "manual")
    labels = tmp_path / "manual" / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[0] = "1 2"  # image 1 lies in class 1's folder
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match="disagrees with the class folders") as e:
        data.prepare(_config("cub", tmp_path))
    assert "001.Bird_A/Bird_A_0000_0.jpg: labelled 002.Bird_B" in str(e.value)


def test_dogs_list_disagrees_with_folder(tmp_path):
    (tmp_path / "manual").mkdir()
    fakes.stanford_dogs(tmp_path)  # tmp_path/work holds the extracted release
    work = tmp_path / "work"
    mat = scipy.io.loadmat(work / "lists" / "train_list.mat")
    mat["labels"][0, 0] = 3
    scipy.io.savemat(
        tmp_path / "manual" / "train_list.mat",
        {k: v for k, v in mat.items() if not k.startswith("__")},
    )
    for name in ("test_list.mat", "file_list.mat"):
        (tmp_path / "manual" / name).write_bytes((work / "lists" / name).read_bytes())
    (tmp_path / "manual" / "Images").symlink_to(work / "Images")
    with pytest.raises(data.DataError, match="train_list.mat disagrees"):
        data.prepare(_config("stanford_dogs", tmp_path))


def test_unlisted_images_are_reported(tmp_path, caplog):
    fakes.cub(tmp_path / "manual", classes=2, per_class=2)
    extra = tmp_path / "manual" / "CUB_200_2011" / "images" / "001.Bird_A" / "stray.jpg"
    fakes.jpeg(extra, seed=1)
    with caplog.at_level(logging.WARNING):
        data.prepare(_config("cub", tmp_path))
    assert str(extra) in caplog.text


def test_bad_label_level_and_split(tmp_path):
    fakes.fgvc_aircraft(tmp_path / "manual")
    with pytest.raises(data.DataError, match="label_level='model'"):
        data.prepare(_config("fgvc_aircraft", tmp_path, label_level="model"))
    config = _config("synthetic_fgvc", tmp_path, train_split="training")
    config.synthetic.update(dict(num_classes=2, train_per_class=2, test_per_class=1))
    with pytest.raises(data.DataError, match="no split 'training'; it has test, train"):
        next(
            data.train_iterator(
                config, global_batch_size=2, seed=0, process_index=0, process_count=1
            )
        )


def test_missing_catalog_dataset_without_network_fails_in_seconds(tmp_path, monkeypatch):
    """CUB not placed, download on, the catalog host unreachable: one error within seconds
    naming the files, the folder and the real key (config.data.manual_dir)."""
    import socket
    import time

    from fgvc_jax.data import datasets

    tried = []

    def refuse(address, timeout=None):
        tried.append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    config = _config("cub", tmp_path)
    config.download = True
    start = time.perf_counter()
    with pytest.raises(data.DataError) as e:
        datasets.prepare(config)
    assert time.perf_counter() - start < 30
    message = str(e.value)
    assert "config.data.manual_dir" in message and str(tmp_path / "manual") in message
    assert "cannot be reached" in message and tried
