"""Image files a person sees differently from their raw samples, each with the reference
rendering: PIL `ImageOps.exif_transpose` plus correct scaling to 8 bits, transparency
composited on white, PIL's CMYK → RGB conversion."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = np.array([255, 255, 255], np.float64)


def _noise(seed: int, shape, high=256, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape, dtype=np.int64).astype(dtype)


def exif_rotated_jpeg(path: Path, orientation: int = 6, size=(32, 24)) -> np.ndarray:
    """An RGB JPEG whose EXIF orientation says 'rotate'; reference: PIL exif_transpose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_noise(1, (size[1], size[0], 3))).save(path, exif=exif, quality=90)
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def grey16_png(path: Path, size=(32, 24)) -> np.ndarray:
    """A 16-bit greyscale PNG (PIL mode I;16) over the full range; reference: v / 257."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = _noise(2, (size[1], size[0]), 65536, np.uint16)
    values[0, :2] = (0, 65535)
    Image.fromarray(values).save(path)
    return np.repeat(np.rint(values / 257.0)[..., None], 3, axis=-1)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def rgb16_png(path: Path, size=(32, 24)) -> np.ndarray:
    """A 16-bit RGB PNG written by hand (PIL cannot write one); reference: v / 257."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = _noise(3, (size[1], size[0], 3), 65536, np.uint16)
    values[0, 0] = (0, 65535, 32896)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", size[0], size[1], 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )
    return np.rint(values / 257.0)


def transparent_png(path: Path, size=(32, 24)) -> np.ndarray:
    """An RGBA PNG with every opacity from clear to opaque; reference: composited on white."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = _noise(4, (size[1], size[0], 4))
    rgba[0, :3, 3] = (0, 128, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    a = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * a + WHITE * (1 - a))


def cmyk_jpeg(path: Path, size=(32, 24)) -> np.ndarray:
    """A CMYK JPEG; reference: PIL's conversion of the decoded CMYK image to RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_noise(5, (size[1], size[0], 4)), "CMYK").save(path, quality=90)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


KINDS = {
    "exif_rotated.jpg": exif_rotated_jpeg,
    "grey16.png": grey16_png,
    "rgb16.png": rgb16_png,
    "transparent.png": transparent_png,
    "cmyk.jpg": cmyk_jpeg,
}


def assert_within_one_grey_level(got: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert got.dtype == np.uint8 and got.shape == reference.shape, (what, got.shape)
    diff = np.abs(got.astype(np.int64) - reference.astype(np.int64)).max()
    assert diff <= 1, f"{what}: differs from the reference rendering by {diff} grey levels"
