"""synthetic_fgvc is deterministic and fine-grained: only the small parts carry the class."""

import io

import numpy as np
import pytest
from PIL import Image

from fgvc_jax.data import config as data_config
from fgvc_jax.data import preprocess
from fgvc_jax.data.builders import synthetic_fgvc as syn
from fgvc_jax.data.errors import DataError


def _images(params, split, n):
    parts = syn.class_parts(params.num_classes, params.seed)
    out = [syn.example(params, split, i, parts)[:2] for i in range(n)]
    return np.stack([im for im, _ in out]), np.array([l for _, l in out])


def _ridge_accuracy(x_train, y_train, x_test, y_test, num_classes, lam=1.0):
    """A linear classifier (one-vs-rest ridge regression on standardised features)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    b = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(num_classes)[y_train])
    return float(np.mean((b @ w).argmax(1) == y_test))


def _thumbnails(images):
    return np.stack(
        [
            np.asarray(Image.fromarray(im).resize((8, 8), Image.BOX), np.float64).ravel()
            for im in images
        ]
    )


def test_deterministic_from_seed():
    p = syn.Params(num_classes=6, seed=3)
    a, b = syn.example(p, "train", 5)[0], syn.example(p, "train", 5)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, syn.example(syn.Params(num_classes=6, seed=4), "train", 5)[0])
    assert not np.array_equal(a, syn.example(p, "test", 5)[0])


def test_linear_models_on_thumbnails_and_mean_colour_are_near_chance():
    p = syn.Params(num_classes=10)
    x_train, y_train = _images(p, "train", 1500)
    x_test, y_test = _images(p, "test", 500)
    thumbs = _ridge_accuracy(
        _thumbnails(x_train), y_train, _thumbnails(x_test), y_test, 10, lam=100.0
    )
    colour = _ridge_accuracy(x_train.mean((1, 2)), y_train, x_test.mean((1, 2)), y_test, 10)
    # chance is 0.10; 0.18 is four binomial standard deviations above it for 500 test images
    assert thumbs < 0.18, thumbs
    assert colour < 0.18, colour
    # the same probe does find the class when the colours carry it
    tint = np.random.default_rng(0).normal(0, 100, (10, 3))
    assert (
        _ridge_accuracy(
            x_train.mean((1, 2)) + tint[y_train],
            y_train,
            x_test.mean((1, 2)) + tint[y_test],
            y_test,
            10,
        )
        > 0.4
    )


def test_class_is_fully_determined_by_small_parts():
    p = syn.Params(num_classes=10)
    parts = syn.class_parts(p.num_classes, p.seed)
    assert len({tuple(row) for row in parts}) == p.num_classes  # distinct per class
    size = p.image_size
    for i in range(40):
        images, inside = [], np.zeros((size, size), bool)
        for label in range(p.num_classes):  # one scene (same generator), every class's marks
            image, boxes = syn.render(np.random.default_rng([7, i]), parts[label], size)
            images.append(image)
            for x0, y0, x1, y1 in boxes:
                assert (x1 - x0) * (y1 - y0) <= 0.05 * size * size
                inside[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True  # + anti-aliasing
        for label in range(1, p.num_classes):
            differs = np.any(images[label] != images[0], axis=-1)
            assert not np.any(differs & ~inside)  # only the part boxes change with the class
            assert np.any(differs)  # and they always do


def test_more_classes_use_three_parts():
    parts = syn.class_parts(40, seed=0)
    assert parts.shape == (40, 3) and len({tuple(r) for r in parts}) == 40
    image, boxes = syn.render(np.random.default_rng(0), parts[0], 96)
    assert image.shape == (96, 96, 3) and len(boxes) == 3


def test_patterns_are_distinct_balanced_and_mirror_symmetric():
    size = 64
    for slot, family in enumerate(syn.PATTERNS):
        shares = [syn.pattern(slot, k, size) for k in range(len(family))]
        for share in shares:
            blocks = share.reshape(size // 8, 8, size // 8, 8).mean(axis=(1, 3))
            np.testing.assert_array_equal(blocks, 0.5)  # half dark in every 8x8 block
            np.testing.assert_array_equal(share[:, ::-1], share)  # a mirrored bird keeps its class
        for i in range(len(shares)):
            for j in range(i):
                assert not np.array_equal(shares[i], shares[j]), (slot, i, j)


def test_image_size_must_be_a_multiple_of_8():
    with pytest.raises(DataError, match="image_size=60"):
        syn.render(np.random.default_rng(0), (0, 0), 60)


def test_default_augmentation_keeps_the_pixel_grid():
    """Flips only: every training view is the stored image or its mirror, pixel for pixel."""
    image, _, _ = syn.example(syn.Params(), "train", 3)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
    stored = np.asarray(Image.open(buf).convert("RGB"))
    aug = preprocess.Augment.train(data_config.default_config("synthetic_fgvc"))
    views = [
        preprocess.train_image(buf.getvalue(), np.random.default_rng(i), aug) for i in range(8)
    ]
    mirrored = [np.array_equal(v, stored[:, ::-1]) for v in views]
    assert all(np.array_equal(v, stored) or m for v, m in zip(views, mirrored))
    assert 0 < sum(mirrored) < len(views)
