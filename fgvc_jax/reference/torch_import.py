"""torch, torchvision and timm, imported on first use. The registry's torchvision is a CUDA
build whose import fails on the CPU torch; `fgvc_jax.convert.torch_reference` defines the two
missing op schemas first (model numerics are unaffected).

`from fgvc_jax.reference.torch_import import torch` (or torchvision, timm) imports them then."""

from __future__ import annotations


def modules():
    """(torch, torchvision, timm)."""
    from fgvc_jax.convert.torch_reference import timm, torch, torchvision

    return torch, torchvision, timm


def __getattr__(name: str):
    if name in ("torch", "torchvision", "timm"):
        return dict(zip(("torch", "torchvision", "timm"), modules()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
