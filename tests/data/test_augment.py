"""Device augmentation: pure in (seed, step), exact crops, mixing and erasing as specified."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from fgvc_jax import data
from fgvc_jax.data import augment

S, C, B, K = 40, 32, 8, 5


def soft_cross_entropy(logits, targets):
    """Mean softmax cross-entropy with soft targets (B, K): −Σ_k t_k log softmax(z)_k."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, -1), -1))


def _config(**kw):
    c = data.default_config()
    c.resize, c.crop = S, C
    c.update(kw)
    return c


def _images(seed=0, b=B, s=S):
    return np.random.default_rng(seed).integers(0, 256, (b, s, s, 3), dtype=np.uint8)


@functools.cache
def _jitted(config_json, k):
    config = data.default_config()
    config.update_from_flattened_dict(json.loads(config_json))
    return jax.jit(functools.partial(augment.train_batch, config=config, num_classes=k))


def _run(config, images, labels, seed=0, step=0, k=K):
    """train_batch jitted once per config (compiling is the slow part on a CPU)."""
    flat = {
        key: config[key]
        for key in (
            "resize",
            "crop",
            "flip",
            "rotation",
            "color_jitter",
            "randaugment_ops",
            "randaugment_magnitude",
            "randaugment_magnitude_std",
            "erase_prob",
            "mixup_alpha",
            "cutmix_alpha",
            "mix_prob",
            "mix_switch_prob",
        )
    }
    fn = _jitted(json.dumps(flat, sort_keys=True), k)
    out, targets = fn(images, labels, augment.step_key(seed, step))
    return np.asarray(out), np.asarray(targets)


LABELS = np.arange(B) % K


def test_batch_is_a_pure_function_of_seed_and_step():
    config = _config(
        rotation=10.0,
        color_jitter=0.3,
        randaugment_ops=1,
        erase_prob=0.5,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
    )
    x = _images()
    a, ta = _run(config, x, LABELS, seed=1, step=7)
    b, tb = _run(config, x, LABELS, seed=1, step=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)
    assert a.dtype == np.float32 and a.shape == (B, C, C, 3)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 255
    assert not np.array_equal(a, _run(config, x, LABELS, seed=1, step=8)[0])
    assert not np.array_equal(a, _run(config, x, LABELS, seed=2, step=7)[0])


def test_resume_at_step_n_equals_uninterrupted(tmp_path):
    """Cached pipeline + device augmentation: steps 3..5 of a run started at step 3 equal
    those of a run started at 0 (the data and augmentation part of a resumed run)."""
    config = data.default_config()
    config.data_dir = str(tmp_path)
    config.synthetic.update(dict(num_classes=4, image_size=32, train_per_class=6, test_per_class=1))
    config.resize, config.crop, config.rotation, config.num_workers = 36, 32, 5.0, 2
    config.mixup_alpha, config.cutmix_alpha = 0.8, 1.0

    fn = jax.jit(functools.partial(augment.train_batch, config=config, num_classes=4))

    def steps(start, n):
        it = data.train_iterator(
            config, global_batch_size=8, seed=0, start_step=start, process_index=0, process_count=1
        )
        out = []
        for step in range(start, start + n):
            batch = next(it)
            assert batch["image"].shape == (8, 36, 36, 3)
            out.append(
                jax.device_get(fn(batch["image"], batch["label"], augment.step_key(0, step)))
            )
        return out

    for (a, ta), (b, tb) in zip(steps(0, 6)[3:], steps(3, 3)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta, tb)


def test_synthetic_quick_start_is_flip_only():
    """resize = crop = 64: every output is its input, flipped or not (the flip draw is
    jax.random's, so which images flip differs from the host path, not how often)."""
    config = data.default_config()
    x = _images(b=32, s=64)
    out, targets = _run(config, x, np.arange(32) % 10, k=10)
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 4 < sum(flipped) < 28
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(targets, np.eye(10)[np.arange(32) % 10])


def test_crop_windows_cover_the_range_and_match_the_slices():
    config = _config(flip=False)
    x = _images(b=64)
    out, _ = _run(config, x, np.zeros(64, int) % K)
    d = jax.device_get(augment.window_draws(augment.example_keys(augment.step_key(0, 0), 64), S, C))
    for i in range(64):
        y, xx = int(d["y"][i]), int(d["x"][i])
        np.testing.assert_array_equal(out[i], x[i, y : y + C, xx : xx + C])
    assert d["x"].min() == 0 and d["x"].max() == S - C  # randint's upper end is inclusive


def _mixed(**kw):
    config = _config(flip=False, **kw)
    x = _images()
    crop_only, _ = _run(_config(flip=False), x, LABELS)
    out, targets = _run(config, x, LABELS)
    return crop_only.astype(np.float64), out.astype(np.float64), targets


def _check_loss(targets, lam):
    logits = np.random.default_rng(1).normal(size=(B, K)).astype(np.float32)
    ce = lambda y: soft_cross_entropy(logits, jax.nn.one_hot(y, K))
    np.testing.assert_allclose(
        soft_cross_entropy(logits, targets),
        lam * ce(LABELS) + (1 - lam) * ce(LABELS[::-1]),
        rtol=1e-5,
    )


def test_mixup_targets_and_loss():
    x, out, targets = _mixed(mixup_alpha=0.8)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    other = x[::-1]
    diff = np.abs(x - other) > 20
    lam = (out - other)[diff] / (x - other)[diff]
    assert lam.std() < 1e-3 and 0 < lam.mean() < 1  # one λ for the batch, mixed images
    lam = lam.mean()
    expect = lam * np.eye(K)[LABELS] + (1 - lam) * np.eye(K)[LABELS[::-1]]
    np.testing.assert_allclose(targets, expect, atol=1e-3)
    _check_loss(targets, lam)


def test_cutmix_targets_and_loss():
    for seed in range(4):  # some draws have an empty box (λ = 1): find a real cut
        config = _config(flip=False, cutmix_alpha=1.0)
        x = _run(_config(flip=False), _images(), LABELS, seed=seed)[0].astype(np.float64)
        out, targets = _run(config, _images(), LABELS, seed=seed)
        pasted = np.all(out == x[::-1], axis=-1) & np.any(x != x[::-1], axis=-1)
        rows, cols = np.nonzero(pasted[0])
        if len(rows):
            break
    kept = np.all(out == x, axis=-1)
    assert np.all(kept | pasted) and np.all(pasted == pasted[0])  # one box, every image
    box = np.zeros((C, C), bool)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    np.testing.assert_array_equal(pasted[0], box)
    lam = 1 - box.mean()
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        targets, lam * np.eye(K)[LABELS] + (1 - lam) * np.eye(K)[LABELS[::-1]], atol=1e-6
    )
    _check_loss(targets, lam)


def test_random_erasing_changes_one_rectangle_only():
    x, out, targets = _mixed(erase_prob=1.0)
    np.testing.assert_array_equal(targets, np.eye(K)[LABELS])
    for i in range(B):
        changed = np.any(out[i] != x[i], axis=-1)
        rows, cols = np.nonzero(changed)
        assert len(rows), "erase_prob=1 erased nothing"
        box = np.zeros_like(changed)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        # every pixel outside the rectangle is unchanged; inside, random values
        np.testing.assert_array_equal(out[i][~box], x[i][~box])
        assert changed[box].mean() > 0.95
        assert augment.ERASE_AREA[0] * 0.5 <= box.mean() <= augment.ERASE_AREA[1] * 1.2


def _pil_u8(seed=0, size=24):
    return np.random.default_rng(seed).integers(20, 230, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, ours, pil",
    [
        ("equalize", augment.equalize, ImageOps.equalize),
        ("autocontrast", augment.autocontrast, ImageOps.autocontrast),
        ("posterize2", lambda x: augment.posterize(x, 2), lambda im: ImageOps.posterize(im, 2)),
        ("solarize", lambda x: augment.solarize(x, 100.0), lambda im: ImageOps.solarize(im, 100)),
    ],
)
def test_randaugment_ops_match_pil(name, ours, pil):
    for seed in range(3):
        x = _pil_u8(seed)
        if name == "equalize":  # a skewed histogram, so the lookup table is not identity
            x = (x.astype(np.float32) ** 2 / 255).astype(np.uint8)
        got = np.asarray(ours(jnp.asarray(x, jnp.float32)))
        np.testing.assert_array_equal(got, np.asarray(pil(Image.fromarray(x))), err_msg=name)


@pytest.mark.parametrize(
    "ours, enhance",
    [
        (augment.brightness, ImageEnhance.Brightness),
        (augment.contrast, ImageEnhance.Contrast),
        (augment.color, ImageEnhance.Color),
        (augment.sharpness, ImageEnhance.Sharpness),
    ],
)
def test_colour_blends_match_pil_enhance(ours, enhance):
    x = _pil_u8()
    for f in (0.4, 1.7):
        got = np.asarray(ours(jnp.asarray(x, jnp.float32), f))
        want = np.asarray(enhance(Image.fromarray(x)).enhance(f)).astype(np.float32)
        assert np.abs(got - want).max() <= 1.0  # PIL rounds to uint8 at each step


def test_bad_image_shape_named():
    with pytest.raises(ValueError, match=r"\(B, 40, 40, 3\) \(data.resize\)"):
        augment.train_batch(
            jnp.zeros((2, 36, 36, 3), jnp.uint8),
            jnp.zeros(2, int),
            augment.step_key(0, 0),
            _config(),
            K,
        )
