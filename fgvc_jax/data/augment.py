"""Training augmentation on the device, inside the jitted step, from uncropped S×S uint8 images.

Every random draw comes from `jax.random`: the key of a train step is `step_key(seed, step)`;
example i of the global batch draws from `fold_in(fold_in(key, 0), i)`, batch-level draws
(mixup/CutMix) from `fold_in(key, 1)`. A batch is therefore a pure function of
(seed, step, images), whatever the number of devices or processes.

Order, as the host path: random C×C crop of the S×S image (a pure slice: the exact pixels of
`preprocess.train_image` for the same window), horizontal flip, rotation, colour jitter;
then RandAugment, random erasing, mixup/CutMix. Images stay uint8 when only crop and flip
are on, else float32 on the 0..255 scale (`preprocess.normalize` takes either). Targets are
soft, (B, K) float32 rows summing to 1 (one-hot without mixing).

Resampling (rotation, RandAugment's shear/translate/rotate) is `dm_pix.affine_transform`
(DeepMind's PIX: stateless functions of explicit parameters, so the draws stay ours; augmax
composes its own key splitting and draws inside each transform). The colour blends are
PIL's `ImageEnhance` formulas, as the host path and timm's RandAugment use.
"""

from __future__ import annotations

import math

import dm_pix
import jax
import jax.numpy as jnp

STREAM = 0x61756721  # fold_in tag separating augmentation keys from the step's dropout keys
FILL = (124.0, 116.0, 104.0)  # timm's RandAugment fill: the ImageNet mean ×255, rounded
ERASE_AREA = (0.02, 1 / 3)  # random erasing (Zhong et al. 2020; timm RandomErasing)
ERASE_RATIO = (0.3, 1 / 0.3)
ERASE_ATTEMPTS = 10


def step_key(seed: int, step) -> jax.Array:
    """The augmentation key of train step `step`: fold_in(fold_in(key(seed), step), STREAM)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), STREAM)


def example_keys(key: jax.Array, batch: int) -> jax.Array:
    """Per-example keys: fold_in(fold_in(key, 0), i) for global batch position i."""
    base = jax.random.fold_in(key, 0)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(batch))


def window_draws(keys: jax.Array, size: int, crop: int, center: bool = False) -> dict:
    """The crop window (top y, left x) in [0, S − C] and the flip of each example key;
    `center` (data.train_crop='center', CRA-SMRA's "through the center") fixes the window
    at ((S − C) // 2, (S − C) // 2)."""

    def one(k):
        ky, kx, kf = jax.random.split(jax.random.fold_in(k, 0), 3)
        if center:
            y = x = jnp.asarray((size - crop) // 2, jnp.int32)
        else:
            y = jax.random.randint(ky, (), 0, size - crop + 1)
            x = jax.random.randint(kx, (), 0, size - crop + 1)
        return {"y": y, "x": x, "flip": jax.random.bernoulli(kf)}

    return jax.vmap(one)(keys)


def _float_ops(config) -> bool:
    return bool(
        config.rotation
        or config.color_jitter
        or config.randaugment_ops
        or config.erase_prob
        or mixes(config)
    )


def mixes(config) -> bool:
    """Whether batches are mixed (mixup / CutMix on): targets are then soft."""
    return bool(config.mix_prob and (config.mixup_alpha or config.cutmix_alpha))


def train_batch(images, labels, key, config, num_classes: int):
    """Augments a global batch: images (B, S, S, 3) uint8, labels (B,) int → (images
    (B, C, C, 3), uint8 or float32 0..255; targets (B, K) float32). `config` is the data
    config (read at trace time: its values are static); `key` is `step_key(seed, step)`."""
    b, s = images.shape[0], images.shape[1]
    c = int(config.crop)
    if images.ndim != 4 or images.shape[2] != s or images.shape[3] != 3 or s != config.resize:
        raise ValueError(
            f"augment.train_batch: images of shape {images.shape}; expected "
            f"(B, {config.resize}, {config.resize}, 3) (data.resize)."
        )
    keys = example_keys(key, b)
    draws = window_draws(keys, s, c, config.get("train_crop", "random") == "center")
    out = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (c, c, 3)))(
        images, draws["y"], draws["x"]
    )
    if config.flip:
        out = jnp.where(draws["flip"][:, None, None, None], out[:, :, ::-1], out)
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if not _float_ops(config):
        return out, targets
    out = jax.vmap(lambda im, k: _photometric(im, k, config))(out.astype(jnp.float32), keys)
    if mixes(config):
        out, targets = mix(out, targets, jax.random.fold_in(key, 1), config)
    return out, targets


def eval_batch(images, config):
    """The center eval_crop×eval_crop of (B, S, S, 3) images (a slice: the host eval path's
    pixels, `preprocess.eval_image`)."""
    s, c = images.shape[1], int(config.eval_crop)
    o = (s - c) // 2
    return images[:, o : o + c, o : o + c]


def _photometric(x, key, config):
    """Rotation, colour jitter, RandAugment, random erasing of one float (C, C, 3) image."""
    k_rot, k_jit, k_ra, k_er = jax.random.split(jax.random.fold_in(key, 1), 4)
    if config.rotation:
        deg = jax.random.uniform(k_rot, (), minval=-config.rotation, maxval=config.rotation)
        x = _warp(x, _rotation(deg, x.shape), (0.0, 0.0, 0.0))  # PIL rotate: black fill
    if config.color_jitter:
        lo, hi = max(0.0, 1 - config.color_jitter), 1 + config.color_jitter
        f = jax.random.uniform(k_jit, (3,), minval=lo, maxval=hi)
        x = color(contrast(brightness(x, f[0]), f[1]), f[2])
    if config.randaugment_ops:
        x = randaugment(
            x,
            k_ra,
            int(config.randaugment_ops),
            float(config.randaugment_magnitude),
            float(config.randaugment_magnitude_std),
        )
    if config.erase_prob:
        x = random_erase(x, k_er, float(config.erase_prob))
    return x


# -- geometry (dm-pix resampling) ---------------------------------------------------------


def _warp(x, m, fill):
    """Pull-resample x with the 2×3 (row, col) matrix m (output → input), bilinear, `fill`
    outside the image."""
    matrix = jnp.zeros((3, 4), jnp.float32).at[:2, :2].set(m[:, :2]).at[:2, 3].set(m[:, 2])
    matrix = matrix.at[2, 2].set(1.0)
    f = jnp.asarray(fill, jnp.float32)
    return dm_pix.affine_transform(x - f, matrix, order=1, mode="constant", cval=0.0) + f


def _about_center(a, shape):
    """[a | t] with t keeping the image center fixed."""
    center = (jnp.asarray(shape[:2], jnp.float32) - 1.0) / 2.0
    return jnp.concatenate([a, (center - a @ center)[:, None]], axis=1)


def _rotation(degrees, shape):
    t = jnp.deg2rad(degrees)
    c, s = jnp.cos(t), jnp.sin(t)
    return _about_center(jnp.array([[c, s], [-s, c]]), shape)


# -- PIL ImageEnhance / ImageOps on float 0..255 -------------------------------------------


def _grey(x):
    """PIL's L = 0.299 R + 0.587 G + 0.114 B."""
    return x @ jnp.array([0.299, 0.587, 0.114], jnp.float32)


def _blend(degenerate, x, f):
    return jnp.clip(degenerate + f * (x - degenerate), 0.0, 255.0)


def brightness(x, f):
    """PIL ImageEnhance.Brightness (blend with black)."""
    return _blend(jnp.zeros_like(x), x, f)


def contrast(x, f):
    """PIL ImageEnhance.Contrast (blend with the mean grey level)."""
    return _blend(jnp.round(jnp.mean(_grey(x))), x, f)


def color(x, f):
    """PIL ImageEnhance.Color (blend with the greyscale image)."""
    return _blend(jnp.round(_grey(x))[..., None], x, f)


def sharpness(x, f):
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH filter (3×3, centre 5, /13),
    border pixels unchanged."""
    k = jnp.array([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], jnp.float32) / 13.0
    p = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    smooth = sum(k[i, j] * p[i : i + h, j : j + w] for i in range(3) for j in range(3))
    inner = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
    return _blend(jnp.where(inner, jnp.round(smooth), x), x, f)


def _u8(x):
    return jnp.clip(jnp.round(x), 0, 255).astype(jnp.int32)


def autocontrast(x):
    """PIL ImageOps.autocontrast: each channel's [min, max] → [0, 255]."""
    v = _u8(x)
    lo, hi = v.min(axis=(0, 1)), v.max(axis=(0, 1))
    stretched = ((v - lo) * 255 // jnp.maximum(hi - lo, 1)).astype(jnp.float32)
    return jnp.where(hi > lo, stretched, x)


def equalize(x):
    """PIL ImageOps.equalize: per channel, lut[i] = (step//2 + #values < i) // step,
    step = (N − count of the largest value present) // 255."""

    def channel(v):
        h = jnp.bincount(v.ravel(), length=256)
        last = h[255 - jnp.argmax(h[::-1] > 0)]
        step = (v.size - last) // 255
        lut = (step // 2 + jnp.cumsum(h) - h) // jnp.maximum(step, 1)
        return jnp.where(step > 0, jnp.minimum(lut[v], 255), v).astype(jnp.float32)

    v = _u8(x)
    return jnp.stack([channel(v[..., i]) for i in range(3)], axis=-1)


def posterize(x, bits):
    shift = 8 - bits
    return ((_u8(x) >> shift) << shift).astype(jnp.float32)


def solarize(x, threshold):
    return jnp.where(x >= threshold, 255.0 - x, x)


def solarize_add(x, add, threshold=128.0):
    return jnp.where(x < threshold, jnp.minimum(x + add, 255.0), x)


# -- RandAugment (timm rand-m{M}-n{N}-mstd{σ}-inc1) ----------------------------------------

_COLOR_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Invert",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
)
_GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
#: timm's _RAND_INCREASING_TRANSFORMS: 15 ops (Identity is our no-op for geometric picks).
RAND_OPS = _COLOR_OPS[1:] + _GEOMETRIC_OPS


def _color_op(index, x, level, sign):
    """The colour op RAND_OPS[index − 1] (index 0: identity) at level ∈ [0, 10]."""
    lv = level / 10.0
    factor = 1.0 + sign * lv * 0.9
    branches = [
        lambda x: x,
        autocontrast,
        equalize,
        lambda x: 255.0 - x,
        lambda x: posterize(x, 4 - jnp.floor(lv * 4).astype(jnp.int32)),
        lambda x: solarize(x, 256.0 - jnp.floor(lv * 256.0)),
        lambda x: solarize_add(x, jnp.floor(lv * 110.0)),
        lambda x: color(x, factor),
        lambda x: contrast(x, factor),
        lambda x: brightness(x, factor),
        lambda x: sharpness(x, factor),
    ]
    return jax.lax.switch(index, branches, x)


def _geometric_matrix(index, level, sign, shape):
    """2×3 pull matrix of _GEOMETRIC_OPS[index] (rotate 30°·l, shear 0.3·l, translate
    0.45·l of the size, l = level/10, with a random sign) as timm."""
    lv = sign * level / 10.0
    h, w = shape[:2]
    eye = jnp.eye(2, dtype=jnp.float32)
    rot = _rotation(30.0 * lv, shape)
    shear_x = jnp.array([[1.0, 0.0, 0.0], [0.3 * lv, 1.0, 0.0]])  # col_in = col + s·row
    shear_y = jnp.array([[1.0, 0.3 * lv, 0.0], [0.0, 1.0, 0.0]])  # row_in = row + s·col
    move_x = jnp.concatenate([eye, jnp.array([[0.0], [0.45 * lv * w]])], axis=1)
    move_y = jnp.concatenate([eye, jnp.array([[0.45 * lv * h], [0.0]])], axis=1)
    return jnp.stack([rot, shear_x, shear_y, move_x, move_y])[index]


def randaugment(x, key, num_ops: int, magnitude: float, magnitude_std: float):
    """timm's RandAugment ('inc1' op set): `num_ops` ops drawn uniformly with replacement,
    each applied with probability 0.5 at magnitude N(M, σ) clipped to [0, 10]."""
    n_color = len(_COLOR_OPS) - 1
    for k in jax.random.split(key, num_ops):
        k_op, k_p, k_m, k_s = jax.random.split(k, 4)
        op = jax.random.randint(k_op, (), 0, len(RAND_OPS))
        level = (
            magnitude + magnitude_std * jax.random.normal(k_m, ())
            if magnitude_std
            else jnp.asarray(magnitude, jnp.float32)
        )
        level = jnp.clip(level, 0.0, 10.0)
        sign = jnp.where(jax.random.bernoulli(k_s), 1.0, -1.0)
        apply = jax.random.bernoulli(k_p)
        is_color = op < n_color
        colored = _color_op(jnp.where(apply & is_color, op + 1, 0), x, level, sign)
        geo = jnp.clip(op - n_color, 0, len(_GEOMETRIC_OPS) - 1)
        warped = _warp(x, _geometric_matrix(geo, level, sign, x.shape), FILL)
        x = jnp.where(apply & ~is_color, warped, colored)
    return x


# -- random erasing -----------------------------------------------------------------------


def erase_box(key, size: int, prob: float):
    """(top, left, h, w, on) of the erased rectangle: area ∈ ERASE_AREA of the image,
    aspect ratio log-uniform in ERASE_RATIO, the first of ERASE_ATTEMPTS draws that fits
    (timm RandomErasing); on = False with probability 1 − prob or when none fits."""
    k_p, k_a, k_r, k_y, k_x = jax.random.split(key, 5)
    n = ERASE_ATTEMPTS
    area = size * size * jax.random.uniform(k_a, (n,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1])
    ratio = jnp.exp(
        jax.random.uniform(
            k_r, (n,), minval=math.log(ERASE_RATIO[0]), maxval=math.log(ERASE_RATIO[1])
        )
    )
    h = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
    fits = (h < size) & (w < size)
    i = jnp.argmax(fits)
    h, w = h[i], w[i]
    top = jax.random.randint(k_y, (), 0, size - h + 1)
    left = jax.random.randint(k_x, (), 0, size - w + 1)
    return top, left, h, w, fits[i] & jax.random.bernoulli(k_p, prob)


def random_erase(x, key, prob: float):
    """Random erasing (Zhong et al. 2020): a rectangle of `erase_box` filled with random
    values in [0, 255]; every other pixel unchanged."""
    k_box, k_fill = jax.random.split(key)
    top, left, h, w, on = erase_box(k_box, x.shape[0], prob)
    rows, cols = jnp.arange(x.shape[0])[:, None], jnp.arange(x.shape[1])[None, :]
    inside = on & (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    noise = jax.random.uniform(k_fill, x.shape, minval=0.0, maxval=255.0)
    return jnp.where(inside[..., None], noise, x)


# -- mixup / CutMix -----------------------------------------------------------------------


def cutmix_box(key, lam, size: int):
    """timm rand_bbox: a box of side size·√(1 − λ) centred uniformly, clipped to the image;
    returns (y0, y1, x0, x1) and λ corrected to the kept area."""
    k_y, k_x = jax.random.split(key)
    cut = jnp.floor(size * jnp.sqrt(1.0 - lam)).astype(jnp.int32)
    cy = jax.random.randint(k_y, (), 0, size)
    cx = jax.random.randint(k_x, (), 0, size)
    y0, y1 = jnp.clip(cy - cut // 2, 0, size), jnp.clip(cy + cut // 2, 0, size)
    x0, x1 = jnp.clip(cx - cut // 2, 0, size), jnp.clip(cx + cut // 2, 0, size)
    return (y0, y1, x0, x1), 1.0 - ((y1 - y0) * (x1 - x0)) / (size * size)


def mix(images, targets, key, config):
    """timm Mixup, mode 'batch': with probability mix_prob the batch is mixed with itself
    reversed, by CutMix (probability mix_switch_prob when both are on) or mixup, one
    λ ~ Beta(α, α) for the batch; targets λ·y + (1 − λ)·y_reversed."""
    k_on, k_switch, k_mix, k_cut, k_box = jax.random.split(key, 5)
    mixup_a, cutmix_a = float(config.mixup_alpha), float(config.cutmix_alpha)
    on = jax.random.bernoulli(k_on, config.mix_prob)
    if mixup_a and cutmix_a:
        use_cut = jax.random.bernoulli(k_switch, config.mix_switch_prob)
    else:
        use_cut = jnp.asarray(bool(cutmix_a))
    lam_mix = jax.random.beta(k_mix, mixup_a, mixup_a) if mixup_a else jnp.float32(1.0)
    lam_cut = jax.random.beta(k_cut, cutmix_a, cutmix_a) if cutmix_a else jnp.float32(1.0)
    (y0, y1, x0, x1), lam_box = cutmix_box(k_box, lam_cut, images.shape[1])
    other = images[::-1]
    rows = jnp.arange(images.shape[1])[:, None]
    cols = jnp.arange(images.shape[2])[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    lam = jnp.where(on, jnp.where(use_cut, lam_box, lam_mix), 1.0).astype(jnp.float32)
    cut = jnp.where(on & box[None, :, :, None], other, images)
    blend = lam * images + (1.0 - lam) * other
    out = jnp.where(use_cut, cut, blend)
    return out, lam * targets + (1.0 - lam) * targets[::-1]
