"""A folder dataset of synthetic_fgvc birds in which the classes differ ONLY in their marks.

For every nuisance seed, each class is rendered with the same generator state (same
background, clutter, pose, colours), so by `synthetic_fgvc.render`'s contract two classes'
images of one seed differ only inside the mark boxes: a model that fits the training set must
use the marks, and the box of each mark is known."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from fgvc_jax.data.builders import synthetic_fgvc

SPLIT_SEEDS = {"train": 0, "test": 1}


def write(
    root: str, num_classes: int = 4, per_class: dict | None = None, size: int = 64, seed: int = 0
) -> dict:
    """Write root/<split>/<class>/<i>.jpg (RGB JPEG, quality 95: stored as is by the folder
    builder, so the files are exactly what the model trains on); returns {split: [(path, label, boxes)]}, also saved
    as root/index.json. Boxes are (x0, y0, x1, y1) in pixels of the written image."""
    per_class = per_class or {"train": 16, "test": 4}
    parts = synthetic_fgvc.class_parts(num_classes, seed)
    names = synthetic_fgvc.class_names(parts)
    index = {}
    for split, n in per_class.items():
        rows = []
        for i in range(n):
            for label in range(num_classes):
                rng = np.random.default_rng([seed, SPLIT_SEEDS[split], i])
                image, boxes = synthetic_fgvc.render(rng, parts[label], size)
                folder = os.path.join(root, split, names[label])
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, f"{i:04d}.jpg")
                Image.fromarray(image).save(path, format="JPEG", quality=95, subsampling=0)
                rows.append((path, label, boxes))
        index[split] = rows
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    return index
