"""The PyTorch oracle: twins of the blocks of `fgvc_jax.layers` (`blocks.py`) and
of the whole methods (one file per method, transcribed from the papers' equations, each
twin's docstring citing them, built from those blocks on torchvision / timm backbones; a
method names its twin, `Method.twin`), and the weight map between flax variables and a
twin's state dict (`weights.py`).

Importing this package does not import torch; `twin(config, num_classes)` does (torch,
torchvision and timm come with the `torch` extra)."""

from __future__ import annotations

from fgvc_jax.reference import registry


def twin(config, num_classes: int):
    """The PyTorch twin of the method named by `config.name` (a `config.method` ConfigDict)."""
    return registry.build(config, num_classes)
