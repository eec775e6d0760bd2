"""Twins by method name: a method names its twin (`Method.twin`, "module:Class")."""

from __future__ import annotations

import importlib

from fgvc_jax.methods import registry as methods


def twin_class(name: str):
    """The twin class of method `name` (imports torch)."""
    methods.default_config(name)  # an unknown name: one clear error
    path = methods.METHODS[name].twin
    if not path:
        with_twin = sorted(n for n, m in methods.METHODS.items() if m.twin)
        raise ValueError(f"no PyTorch twin for method {name!r}; valid: {', '.join(with_twin)}")
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)


def build(config, num_classes: int):
    """The twin of `config.name` (a `config.method` ConfigDict), in eval mode."""
    return twin_class(config.name)(config, num_classes).eval()
