"""synthetic_fgvc: an offline, seeded, fine-grained dataset that builds in seconds.

Every image shows one bird-like object (body, head, wing, tail, legs) on a cluttered
background. Pose (rotation, facing), scale, position and all colours are random. The class
is fixed only by the pattern of small round marks at part slots (head, wing, and tail when
more than 16 classes are asked for), as species differ in the pattern of a crown or a
wing-bar: stripes, bands or checks of a dark and a light colour (both random per image), each
mark inside a box of at most 5% of the image.

Every pattern covers exactly half of every aligned 8x8 block, so mean colour and 8x8
thumbnails carry no class information (tests/data/test_synthetic.py). Patterns are drawn on
the image's pixel grid with periods that divide 8 and are mirror-symmetric, so a horizontal
flip keeps the class and a 4-px patch grid (the CPU Swin's) always sees the same pixels of a
pattern: a first-order feature of one patch, which a small Swin from scratch learns in
minutes. (Patterns at a random phase are second-order and need ≈ 10x more steps: issue 5's
notes.) The synthetic data config therefore neither resizes nor crops.
"""

from __future__ import annotations

import dataclasses
import io
import itertools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from fgvc_jax.data.builders.base import KnownLength, features
from fgvc_jax.data.errors import DataError

SLOTS = ("head", "wing", "tail")
# Per slot, four patterns (name, x period, y period); period 0 = constant along that axis.
# Dark where the x and y stripes differ (xor). Period 2 only along y: k % 2 is not symmetric
# under the mirror x → W-1-x, the centred stripes of periods 4 and 8 are.
PATTERNS = (
    (("vstripes4", 4, 0), ("hstripes4", 0, 4), ("checks4", 4, 4), ("hstripes2", 0, 2)),
    (("vbands8", 8, 0), ("hbands8", 0, 8), ("checks8", 8, 8), ("plain", 0, 0)),
    (("checks4x8", 4, 8), ("checks8x4", 8, 4), ("checks8x2", 8, 2), ("checks4x2", 4, 2)),
)
OUTLINE = (20, 20, 20)
_SUPERSAMPLE = 2
_SPLIT_IDS = {"train": 0, "test": 1}
# Mark radius relative to the body half-length: the largest that keeps every mark box ≤ 5%
# of the image (tests/data/test_synthetic.py) for any pose.
MARK_SCALE = 0.38


@dataclasses.dataclass(frozen=True)
class Params:
    num_classes: int = 10
    image_size: int = 64
    train_per_class: int = 300
    test_per_class: int = 100
    seed: int = 0


def class_parts(num_classes: int, seed: int) -> np.ndarray:
    """(num_classes, slots) pattern indices: a distinct mark combination per class."""
    per_slot = len(PATTERNS[0])
    if not 2 <= num_classes <= per_slot ** len(SLOTS):
        raise DataError(
            f"synthetic.num_classes={num_classes}; expected 2 to {per_slot ** len(SLOTS)}."
        )
    slots = 2 if num_classes <= per_slot**2 else 3
    combos = list(itertools.product(range(per_slot), repeat=slots))
    order = np.random.default_rng([seed, 12345]).permutation(len(combos))
    return np.array([combos[i] for i in order[:num_classes]])


def class_names(parts: np.ndarray) -> list[str]:
    return [
        f"{i:02d}_" + "_".join(f"{SLOTS[s]}-{PATTERNS[s][k][0]}" for s, k in enumerate(row))
        for i, row in enumerate(parts)
    ]


def _stripes(k: np.ndarray, period: int) -> np.ndarray:
    """1 on the stripes of `period` along pixel index k: k % 2 for period 2, else the
    centred half [period/4, 3 period/4) of each period (mirror-symmetric when the image size
    is a multiple of the period); 0 everywhere for period 0."""
    if period == 0:
        return np.zeros_like(k)
    if period == 2:
        return k % 2
    return ((k % period >= period // 4) & (k % period < 3 * period // 4)).astype(k.dtype)


def pattern(slot: int, index: int, size: int) -> np.ndarray:
    """(size, size) share of the dark colour of pattern `index` of `slot`: 0/1, or 0.5 for
    'plain' (the mean of the two colours)."""
    _, px, py = PATTERNS[slot][index]
    if px == py == 0:
        return np.full((size, size), 0.5, np.float32)
    y, x = np.mgrid[:size, :size]
    return (_stripes(x, px) ^ _stripes(y, py)).astype(np.float32)


def _ellipse(cx, cy, rx, ry, n=32):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _flat(points: np.ndarray) -> list[float]:
    return points.ravel().tolist()


def _coverage(polygon: np.ndarray, ss: int, **style) -> np.ndarray:
    """(size, size, 1) anti-aliased coverage in [0, 1] of a polygon drawn at supersampled `ss`."""
    mask = Image.new("L", (ss, ss), 0)
    ImageDraw.Draw(mask).polygon(_flat(polygon), **style)
    return np.asarray(mask.reduce(_SUPERSAMPLE), np.float32)[..., None] / 255


def render(rng: np.random.Generator, parts, size: int = 64):
    """One image (size, size, 3) uint8 with marks `parts`, and each mark's bounding box
    (x0, y0, x1, y1) in pixels; anti-aliasing may touch one more pixel around it.

    All nuisance values are drawn from `rng` up front, in amounts that do not depend on
    `parts`, so two calls with equal generators differ only inside the mark boxes.
    """
    if size % 8:
        raise DataError(
            f"synthetic.image_size={size}; expected a multiple of 8 (the patterns' "
            "largest period, so that a mirrored image keeps its class)."
        )
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
    dark = rng.integers(0, 60, 3).astype(np.float32)  # the marks' two colours
    light = rng.integers(196, 256, 3).astype(np.float32)

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
    draw.polygon(
        _flat(place([[-0.85 * a, 0], [-1.6 * a, -0.4 * a], [-1.6 * a, 0.4 * a]])), fill=wing
    )
    draw.polygon(_flat(place(_ellipse(0, 0, a, 0.5 * a))), fill=body)
    draw.polygon(_flat(place(_ellipse(1.05 * a, -0.35 * a, 0.45 * a, 0.45 * a))), fill=body)
    draw.polygon(_flat(place(_ellipse(-0.1 * a, 0.05 * a, 0.55 * a, 0.22 * a))), fill=wing)
    draw.polygon(_flat(place(_ellipse(1.3 * a, -0.4 * a, 0.07 * a, 0.07 * a, 8))), fill=(0, 0, 0))

    # The marks are composited at the final resolution, on its pixel grid (see the docstring).
    out = np.asarray(img.reduce(_SUPERSAMPLE), np.float32)
    slots = [(1.0 * a, -0.33 * a), (-0.1 * a, 0.05 * a), (-1.3 * a, 0.0)]
    boxes = []
    for slot, index in enumerate(parts):
        outline = place(_ellipse(*slots[slot], MARK_SCALE * a, MARK_SCALE * a))
        share = pattern(slot, int(index), size)[..., None]
        fill = _coverage(outline, ss, fill=255)
        out = out * (1 - fill) + (share * dark + (1 - share) * light) * fill
        ring = _coverage(outline, ss, outline=255, width=_SUPERSAMPLE)
        out = out * (1 - ring) + np.array(OUTLINE, np.float32) * ring
        xy_out = outline / _SUPERSAMPLE
        x0, y0 = np.floor(xy_out.min(0)).astype(int)
        x1, y1 = np.ceil(xy_out.max(0)).astype(int)
        boxes.append((int(max(x0, 0)), int(max(y0, 0)), int(min(x1, size)), int(min(y1, size))))
    return np.round(out).astype(np.uint8), boxes


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
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.1.0": "Marks 0.30 of the body half-length (was 0.28), a two-tone pattern "
        "per mark shape, dark outline.",
        "1.2.0": "JPEG without chroma subsampling (mark-box error 19 → 3 levels).",
        "2.0.0": "Classes by the pattern (stripes, bands, checks) of round marks on "
        "the pixel grid instead of the mark shape: a small Swin learns it "
        "from scratch in minutes.",
    }

    def __init__(self, *, params: Params = Params(), **kwargs):
        self._params = params
        p = params
        config = tfds.core.BuilderConfig(
            name=f"c{p.num_classes}_s{p.image_size}_n{p.train_per_class}_{p.test_per_class}"
            f"_seed{p.seed}"
        )
        super().__init__(config=config, **kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=features(), supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        self.info.features["label"].names = class_names(
            class_parts(self._params.num_classes, self._params.seed)
        )
        p = self._params
        counts = {
            "train": p.num_classes * p.train_per_class,
            "test": p.num_classes * p.test_per_class,
        }
        return {s: KnownLength(self._generate_examples(s, n), n) for s, n in counts.items()}

    def _generate_examples(self, split, count):
        parts = class_parts(self._params.num_classes, self._params.seed)
        for i in range(count):
            image, label, _ = example(self._params, split, i, parts)
            buf = io.BytesIO()
            # 4:4:4 (no chroma subsampling): 4:2:0 averages a mark's two tones into grey.
            Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
            name = f"{split}/{i:06d}.jpg"
            yield name, {"image": buf.getvalue(), "label": label, "filename": name}
