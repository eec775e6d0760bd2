"""Run a model written by `python -m fgvc_jax.export --format jax` with JAX alone.

This module imports only numpy and jax (not flax nor the rest of this library), so a serving
process can import it, or a copy of this one file:

    from fgvc_jax import serving
    model = serving.load("exported/mine")  # the --out folder, or its model.jax
    probs = model(images)  # uint8 (B, C, C, 3) → float32 (B, K) probabilities
    names = model.class_names  # from class_names.txt beside model.jax

`model.jax` is `jax.export`'s serialized StableHLO of the function `predict` runs: the
normalisation, the network with its weights (constants of the module) and the method's
combined probabilities, as the SavedModel's `serving_default` takes and gives them.
"""

from __future__ import annotations

import os

import jax
import numpy as np

MODEL_FILE = "model.jax"
CLASS_NAMES_FILE = "class_names.txt"


class Model:
    """uint8 images (B, C, C, 3) → per-class probabilities (B, K) float32 (numpy)."""

    def __init__(self, exported: jax.export.Exported, class_names: list[str] | None):
        self.exported = exported
        self.class_names = class_names
        self._call = jax.jit(exported.call)

    @property
    def input_shape(self) -> tuple:
        """(B, C, C, 3); B is a symbolic dimension when any batch size is accepted."""
        return tuple(self.exported.in_avals[0].shape)

    def __call__(self, images) -> np.ndarray:
        return np.asarray(self._call(images))


def load(path: str) -> Model:
    """The model of an export folder (or of its `model.jax` file)."""
    file = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    with open(file, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    names_file = os.path.join(os.path.dirname(file), CLASS_NAMES_FILE)
    names = None
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as f:
            names = f.read().splitlines()
    return Model(exported, names)
