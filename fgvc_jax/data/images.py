"""Image files decoded as a person sees them: the one decoder of training, evaluation and the
tools.

- EXIF orientation (tag 0x0112, also read from XMP by PIL) is applied, as
  `PIL.ImageOps.exif_transpose` does.
- 16-bit and other high-depth modes are scaled, not clipped, to 8 bits: `I;16*` samples
  v → round(v / 257) (65535 → 255); `I` (32-bit integers) the same when every value fits in
  16 bits (PIL's form of 16-bit data), else [min, max] → [0, 255]; `F` (floats) ×255 when in
  [0, 1], else [min, max] → [0, 255]. 16-bit RGB(A) PNGs are read by PIL at 8 bits already
  (the high byte of each sample, within 1 grey level of the rounded value).
- Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited on
  `BACKGROUND`, opaque white, the background image viewers and browsers show:
  out = round((c·α + b·(255 − α)) / 255).
- CMYK, YCbCr, P, L, 1, ... are converted to RGB by PIL's conversions (no ICC colour
  management).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fgvc_jax.data.errors import DataError

BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white
#: The file names taken as images, in dataset folders and by the tools.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # as PIL.ImageOps.exif_transpose
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

Draft = Callable[[int, int], tuple[int, int]]


def decode(source, *, name: str | None = None) -> np.ndarray:
    """The uint8 (H, W, 3) RGB array a person sees of encoded image bytes or an image file.

    Raises DataError naming the file (`name`, else the path) when it cannot be read.
    """
    return np.asarray(open_as_seen(source, name=name), dtype=np.uint8)


def open_as_seen(source, *, name: str | None = None, draft: Draft | None = None) -> Image.Image:
    """`decode` as a loaded RGB PIL image. `draft(w, h)` (the size as seen) → (tw, th), the
    size the caller will resize to: a JPEG is then decoded at the smallest DCT scale that
    keeps it at least that large (`PIL.Image.draft`), as in the stored orientation."""
    encoded = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("<image bytes>" if encoded else os.fspath(source))
    try:
        im = Image.open(io.BytesIO(source if encoded else Path(source).read_bytes()))
        orientation = _orientation(im)
        swap = orientation in (5, 6, 7, 8)
        if draft is not None:
            w, h = im.size[::-1] if swap else im.size
            tw, th = draft(w, h)
            im.draft("RGB", (th, tw) if swap else (tw, th))
        im.load()
        rgb = _to_rgb(im)
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
        return rgb
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for bad data; OSError for missing files
        raise DataError(f"Cannot read image {name}: {reason(e)}") from e


def reason(e: Exception) -> str:
    """Why an image could not be read, without PIL's `<_io.BytesIO object at 0x…>`."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
    if isinstance(e, UnidentifiedImageError):
        return "not an image file PIL can read (cannot identify its format)"
    return f"{type(e).__name__}: {text}"


def _orientation(im: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1..8; a JPEG without either is not parsed."""
    if im.format == "JPEG" and not any(k in im.info for k in ("exif", "xmp")):
        return 1
    return int(im.getexif().get(_ORIENTATION, 1) or 1)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Mode conversion of a loaded image: scaling of deep modes, compositing, RGB."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _deep_to_rgb(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        return Image.fromarray(_composite(rgba[..., :3], rgba[..., 3]))
    return im.convert("RGB")


def _deep_to_rgb(im: Image.Image) -> Image.Image:
    """Greyscale with more than 8 bits per sample (modes I;16*, I, F) → 8-bit RGB."""
    x = np.asarray(im).astype(np.float64)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        grey = x / 257.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        grey = x * 255.0
    else:
        grey = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    key = im.info.get("transparency")
    if isinstance(key, int):
        return Image.fromarray(_composite(rgb, np.where(np.asarray(im) == key, 0, 255)))
    return Image.fromarray(rgb.astype(np.uint8))


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """round((c·α + b·(255 − α)) / 255) over `BACKGROUND`, uint8."""
    a = alpha.astype(np.uint32)[..., None]
    bg = np.asarray(BACKGROUND, np.uint32)
    return ((rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
