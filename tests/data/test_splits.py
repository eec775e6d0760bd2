"""Honest model selection: the validation split is carved deterministically and stratified
from the training split, disjoint from what is fitted; the papers' protocol fits on all."""

import ml_collections
import numpy as np
import pytest

from fgvc_jax.data import splits


def _config(**kw):
    c = dict(train_split="train", test_split="test", val_split="", val_fraction=0.1)
    c.update(kw)
    return ml_collections.ConfigDict(c)


def test_resolve_protocols():
    assert splits.resolve(_config()) == splits.Splits("train~fit@0.1", "train~val@0.1", "test")
    assert splits.resolve(_config(val_split="val")) == splits.Splits("train", "val", "test")
    assert splits.resolve(_config(val_fraction=0.0)) == splits.Splits("train", None, "test")
    assert splits.resolve(_config(val_split="val", val_fraction=0.0)) == splits.Splits(
        "train+val", None, "test"
    )  # FGVC-Aircraft's papers' protocol: trainval
    with pytest.raises(Exception, match="val_fraction=1.5"):
        splits.resolve(_config(val_fraction=1.5))


def test_carve_is_stratified_disjoint_and_deterministic():
    labels = np.repeat(np.arange(5), [30, 20, 10, 2, 1])
    fit, val = splits.carve(labels, 0.1, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(labels)
    counts = np.bincount(labels[val], minlength=5)
    assert counts.tolist() == [3, 2, 1, 1, 0]  # round(0.1 n), at least one of two or more
    again = splits.carve(labels, 0.1, seed=0)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(splits.carve(labels, 0.1, seed=1)[1], val)


def test_carved_source_and_labels_cache(tmp_path):
    records = [{"label": int(c), "image": b""} for c in np.repeat(np.arange(3), 10)]
    val = splits.carved_source("train~val@0.2", records, tmp_path, seed=0)
    fit = splits.carved_source("train~fit@0.2", records, tmp_path, seed=0)
    assert len(val) == 6 and len(fit) == 24
    assert sorted(r["label"] for r in val) == [0, 0, 1, 1, 2, 2]
    assert (tmp_path / "labels_train.json").exists()
    records[0] = {"label": 2, "image": b""}  # the cached labels are reused (same count)
    assert splits.labels_of(records, tmp_path / "labels_train.json")[0] == 0
