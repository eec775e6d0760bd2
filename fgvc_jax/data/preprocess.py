"""Host-side image ops on uint8 (PIL): train augmentation, eval crop; device normalisation.

'square' mode resizes the whole image to S×S (bilinear) and slices the C×C window out of it:
the pixels of the decoded cache (`square_image`) cropped on the device, exactly. 'shorter'
mode resizes only the crop window's box to C×C (PIL `resize(box=...)`), one resampling step
that matches resizing first up to ±1 grey level (PIL's pass order can differ). JPEGs much
larger than S are decoded at a reduced DCT scale (`draft`), never below S.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance

from fgvc_jax.data import images
from fgvc_jax.data.errors import DataError
from fgvc_jax.runtime import precision


@dataclasses.dataclass(frozen=True)
class Augment:
    resize: int
    crop: int
    mode: str = "square"  # "square" (S×S) or "shorter" (shorter side → S)
    flip: bool = False
    rotation: float = 0.0  # max degrees
    color_jitter: float = 0.0
    center_crop: bool = False  # data.train_crop='center'

    @classmethod
    def train(cls, config) -> Augment:
        crop = config.get("train_crop", "random")
        if crop not in ("random", "center"):
            raise DataError(f"config.data.train_crop={crop!r}; expected 'random' or 'center'.")
        return cls(
            config.resize,
            config.crop,
            config.resize_mode,
            config.flip,
            float(config.rotation),
            float(config.color_jitter),
            crop == "center",
        ).checked()

    @classmethod
    def eval(cls, config) -> Augment:
        return cls(config.eval_resize, config.eval_crop, config.resize_mode).checked()

    def checked(self) -> Augment:
        if self.mode not in ("square", "shorter"):
            raise DataError(f"config.resize_mode={self.mode!r}; expected 'square' or 'shorter'.")
        if not 0 < self.crop <= self.resize:
            raise DataError(
                f"Crop {self.crop} must be positive and at most the resize {self.resize}."
            )
        return self


def _open(data: bytes, aug: Augment) -> tuple[Image.Image, int, int]:
    """The RGB image as seen (`images.open_as_seen`: EXIF orientation applied; records hold
    either such a JPEG or an RGB PNG) and its size after resizing to S (per `aug.mode`)."""
    target = []

    def draft(w, h):
        target.append(
            (aug.resize, aug.resize)
            if aug.mode == "square"
            else (
                max(aug.crop, round(w * aug.resize / min(w, h))),
                max(aug.crop, round(h * aug.resize / min(w, h))),
            )
        )
        return target[0]

    im = images.open_as_seen(data, draft=draft)
    return im, *target[0]


def square_image(data: bytes, size: int) -> np.ndarray:
    """The image resized to size×size (bilinear): an entry of the decoded cache."""
    im, tw, th = _open(data, Augment(size, size))
    return np.asarray(im.resize((tw, th), Image.BILINEAR), dtype=np.uint8)


def _resized_crop(im: Image.Image, tw: int, th: int, x: int, y: int, c: int) -> Image.Image:
    """Crop (x, y, c, c) of `im` resized to (tw, th): in 'square' mode (tw = th) the whole
    image is resized and the window sliced out; else only the window's box is resized."""
    if tw == th:
        return im.resize((tw, th), Image.BILINEAR).crop((x, y, x + c, y + c))
    sx, sy = im.width / tw, im.height / th
    return im.resize((c, c), Image.BILINEAR, box=(x * sx, y * sy, (x + c) * sx, (y + c) * sy))


def train_image(data: bytes, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Random (or, with `center_crop`, center) crop C of the image resized to S, flip,
    rotation, colour jitter → (C, C, 3)."""
    im, tw, th = _open(data, aug)
    x, y = int(rng.integers(0, tw - aug.crop + 1)), int(rng.integers(0, th - aug.crop + 1))
    if aug.center_crop:
        x, y = (tw - aug.crop) // 2, (th - aug.crop) // 2
    out = _resized_crop(im, tw, th, x, y, aug.crop)
    if aug.flip and rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if aug.rotation:
        out = out.rotate(rng.uniform(-aug.rotation, aug.rotation), Image.BILINEAR)
    if aug.color_jitter:
        lo, hi = max(0.0, 1 - aug.color_jitter), 1 + aug.color_jitter
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            out = enhance(out).enhance(rng.uniform(lo, hi))
    return np.asarray(out, dtype=np.uint8)


def eval_image(data: bytes, aug: Augment) -> np.ndarray:
    """Center crop C of the image resized to S → (C, C, 3) uint8."""
    im, tw, th = _open(data, aug)
    x, y = (tw - aug.crop) // 2, (th - aug.crop) // 2
    return np.asarray(_resized_crop(im, tw, th, x, y, aug.crop), dtype=np.uint8)


def normalize(images, mean, std, dtype=jnp.float32):
    """uint8 NHWC (on the device) → (x/255 − mean)/std in `dtype`; mean/std per channel.
    Computed in at least float32 (`runtime.precision`: float64 for a float64 `dtype`)."""
    acc = precision.accumulation_dtype(dtype)
    x = jnp.asarray(images).astype(acc) / 255.0
    x = (x - jnp.asarray(mean, acc)) / jnp.asarray(std, acc)
    return x.astype(dtype)
