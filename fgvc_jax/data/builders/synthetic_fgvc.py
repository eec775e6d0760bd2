"""synthetic_fgvc: an offline, seeded, fine-grained dataset that builds in seconds.

Every image shows one bird-like object (body, head, wing, tail, legs) on a cluttered
background. Pose (rotation, facing), scale, position and all colours are random. The class
is fixed only by the shapes of small marks at part slots (head, wing, and tail when more than
16 classes are asked for): disc, square, triangle or cross, all of about the same area and
each inside a box of at most 5% of the image. Mean colour and coarse thumbnails therefore
carry no class information; the marks carry all of it.
"""
from __future__ import annotations

import dataclasses
import io
import itertools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from fgvc_jax.data.builders.base import features
from fgvc_jax.data.errors import DataError

SHAPES = ("disc", "square", "triangle", "cross")
# Each mark shape has its own two-tone pattern, as species differ in the shape and pattern of a
# small part (a crown, a wing-bar): half in a palette colour, half in its complement, so every
# mark averages the same grey and coarse statistics (mean colour, thumbnails) stay blind to the
# class. A dark outline keeps every mark visible on any body colour.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25))
OUTLINE = (20, 20, 20)
SLOTS = ("head", "wing", "tail")
_SUPERSAMPLE = 2
_SPLIT_IDS = {"train": 0, "test": 1}
# Mark size relative to the body half-length: the largest that keeps every mark box ≤ 5% of
# the image (tests/data/test_synthetic.py) for any pose.
MARK_SCALE = 0.30


@dataclasses.dataclass(frozen=True)
class Params:
    num_classes: int = 10
    image_size: int = 64
    train_per_class: int = 300
    test_per_class: int = 100
    seed: int = 0


def class_parts(num_classes: int, seed: int) -> np.ndarray:
    """(num_classes, slots) shape indices: a distinct mark combination per class."""
    if not 2 <= num_classes <= len(SHAPES) ** len(SLOTS):
        raise DataError(f"synthetic.num_classes={num_classes}; expected 2 to "
                        f"{len(SHAPES) ** len(SLOTS)}.")
    slots = 2 if num_classes <= len(SHAPES) ** 2 else 3
    combos = list(itertools.product(range(len(SHAPES)), repeat=slots))
    order = np.random.default_rng([seed, 12345]).permutation(len(combos))
    return np.array([combos[i] for i in order[:num_classes]])


def class_names(parts: np.ndarray) -> list[str]:
    return ["%02d_" % i + "_".join(f"{SLOTS[s]}-{SHAPES[k]}" for s, k in enumerate(row))
            for i, row in enumerate(parts)]


def _mark(shape: int, h: float) -> np.ndarray:
    """Mark outline (N, 2) in its own frame, area ≈ π h² for every shape."""
    if SHAPES[shape] == "disc":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return h * np.stack([np.cos(t), np.sin(t)], 1)
    if SHAPES[shape] == "square":
        s = h * np.sqrt(np.pi) / 2
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if SHAPES[shape] == "triangle":
        r = h * np.sqrt(4 * np.pi / (3 * np.sqrt(3)))
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        return r * np.stack([np.cos(t), np.sin(t)], 1)
    a, w = h * np.sqrt(np.pi / 3), h * np.sqrt(np.pi / 3) / 2  # cross: area 3a² = πh²
    return np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a],
                     [-w, w], [-a, w], [-a, -w], [-w, -w]])


def _ellipse(cx, cy, rx, ry, n=32):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _half(points: np.ndarray) -> np.ndarray:
    """The part of a polygon (in its own frame) with x ≤ 0 (Sutherland-Hodgman, one edge)."""
    out = []
    for p, q in zip(points, np.roll(points, -1, axis=0)):
        if p[0] <= 0:
            out.append(p)
        if (p[0] <= 0) != (q[0] <= 0):
            t = p[0] / (p[0] - q[0])
            out.append(p + t * (q - p))
    return np.array(out)


def _flat(points: np.ndarray) -> list[float]:
    return points.ravel().tolist()


def render(rng: np.random.Generator, parts, size: int = 64):
    """One image (size, size, 3) uint8 with marks `parts`, and each mark's bounding box
    (x0, y0, x1, y1) in pixels; anti-aliasing may touch one more pixel around it.

    All nuisance values are drawn from `rng` up front, in amounts that do not depend on
    `parts`, so two calls with equal generators differ only inside the mark boxes.
    """
    ss = size * _SUPERSAMPLE
    n_max = 20
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    n_clutter = int(rng.integers(10, n_max))
    kinds = rng.integers(0, 3, n_max)
    colours = rng.integers(0, 256, (n_max, 3))
    xy = rng.uniform(0, ss, (n_max, 2))
    wh = rng.uniform(0.12, 0.4, (n_max, 2)) * ss
    ends = rng.uniform(-1, 1, (n_max, 2)) * wh * 2
    widths = rng.integers(1, 4, n_max) * _SUPERSAMPLE
    a = rng.uniform(0.18, 0.25) * ss  # body half-length: the object's scale
    theta = np.deg2rad(rng.uniform(-40, 40))
    facing = 1.0 if rng.random() < 0.5 else -1.0
    lo, hi = 1.35 * a + 0.12 * ss, ss - 1.35 * a - 0.12 * ss
    centre = rng.uniform(lo, hi, 2)
    body = tuple(int(v) for v in rng.integers(0, 256, 3))
    wing = tuple(int(c * rng.uniform(0.5, 0.8)) for c in body)
    legs = tuple(int(v) for v in rng.integers(0, 256, 3))

    img = Image.new("RGB", (ss, ss), background)
    draw = ImageDraw.Draw(img)
    for i in range(n_clutter):  # behind the object
        col, (x, y), (w, h) = tuple(int(v) for v in colours[i]), xy[i], wh[i]
        if kinds[i] == 0:
            draw.line([x, y, x + ends[i, 0], y + ends[i, 1]], fill=col, width=int(widths[i]))
        elif kinds[i] == 1:
            draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=col)
        else:
            draw.rectangle([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=col)

    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    transform = (rot * np.array([facing, 1.0])).T  # mirror (facing), then rotate

    def place(points):  # object frame (facing +x, unit = pixels) → image
        return np.asarray(points, float) @ transform + centre

    leg = 2 * _SUPERSAMPLE
    draw.line(_flat(place([[0.15 * a, 0.3 * a], [0.1 * a, 0.95 * a]])), fill=legs, width=leg)
    draw.line(_flat(place([[-0.2 * a, 0.3 * a], [-0.25 * a, 0.95 * a]])), fill=legs, width=leg)
    draw.polygon(_flat(place([[-0.85 * a, 0], [-1.6 * a, -0.4 * a], [-1.6 * a, 0.4 * a]])),
                 fill=wing)
    draw.polygon(_flat(place(_ellipse(0, 0, a, 0.5 * a))), fill=body)
    draw.polygon(_flat(place(_ellipse(1.05 * a, -0.35 * a, 0.45 * a, 0.45 * a))), fill=body)
    draw.polygon(_flat(place(_ellipse(-0.1 * a, 0.05 * a, 0.55 * a, 0.22 * a))), fill=wing)
    draw.polygon(_flat(place(_ellipse(1.3 * a, -0.4 * a, 0.07 * a, 0.07 * a, 8))), fill=(0, 0, 0))

    slots = [(1.0 * a, -0.33 * a), (-0.1 * a, 0.05 * a), (-1.3 * a, 0.0)]
    boxes = []
    for slot, shape in enumerate(parts):
        mark = _mark(int(shape), MARK_SCALE * a)
        outline = place(mark + np.array(slots[slot]))
        colour = PALETTE[int(shape)]
        draw.polygon(_flat(outline), fill=colour)
        draw.polygon(_flat(place(_half(mark) + np.array(slots[slot]))),
                     fill=tuple(255 - c for c in colour))
        draw.polygon(_flat(outline), outline=OUTLINE, width=_SUPERSAMPLE)
        xy_out = outline / _SUPERSAMPLE
        x0, y0 = np.floor(xy_out.min(0)).astype(int)
        x1, y1 = np.ceil(xy_out.max(0)).astype(int)
        boxes.append((int(max(x0, 0)), int(max(y0, 0)), int(min(x1, size)), int(min(y1, size))))
    return np.asarray(img.reduce(_SUPERSAMPLE)), boxes


def example(params: Params, split: str, index: int, parts: np.ndarray | None = None):
    """(image, label, boxes) of example `index` of `split`: a pure function of its arguments."""
    parts = class_parts(params.num_classes, params.seed) if parts is None else parts
    label = index % params.num_classes
    rng = np.random.default_rng([params.seed, _SPLIT_IDS[split], index])
    image, boxes = render(rng, parts[label], params.image_size)
    return image, label, boxes


class SyntheticFGVC(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS builder of synthetic_fgvc; one builder config per parameter set."""

    name = "synthetic_fgvc"
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.1.0": "Marks 0.30 of the body half-length (was 0.28), a two-tone pattern "
                              "per mark shape, dark outline: learnable on CPU in minutes.",
                     "1.2.0": "JPEG without chroma subsampling (mark-box error 19 → 3 levels)."}

    def __init__(self, *, params: Params = Params(), **kwargs):
        self._params = params
        p = params
        config = tfds.core.BuilderConfig(
            name=f"c{p.num_classes}_s{p.image_size}_n{p.train_per_class}_{p.test_per_class}"
                 f"_seed{p.seed}")
        super().__init__(config=config, **kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features(),
                                     supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager
        self.info.features["label"].names = class_names(
            class_parts(self._params.num_classes, self._params.seed))
        p = self._params
        return {"train": self._generate_examples("train", p.num_classes * p.train_per_class),
                "test": self._generate_examples("test", p.num_classes * p.test_per_class)}

    def _generate_examples(self, split, count):
        parts = class_parts(self._params.num_classes, self._params.seed)
        for i in range(count):
            image, label, _ = example(self._params, split, i, parts)
            buf = io.BytesIO()
            # 4:4:4 (no chroma subsampling): 4:2:0 averages a mark's two tones into grey.
            Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
            name = f"{split}/{i:06d}.jpg"
            yield name, {"image": buf.getvalue(), "label": label, "filename": name}
