"""PyTorch twins of the whole methods, transcribed from the papers' equations (each twin's
docstring cites them), built on torchvision / timm backbones, and the weight map between a
method's flax variables and its twin's state dict.

Importing this package does not import torch; `twin(config, num_classes)` does (torch,
torchvision and timm come with the `torch` extra)."""

from __future__ import annotations


def twin(config, num_classes: int):
    """The PyTorch twin of the method named by `config.name` (a `config.method` ConfigDict)."""
    from fgvc_jax.reference import registry

    return registry.build(config, num_classes)
