"""torch / torchvision / timm for the reference checks; see fgvc_jax.convert.torch_reference
for the torchvision CUDA-build workaround this import applies."""

from fgvc_jax.convert.torch_reference import timm, torch, torchvision

__all__ = ["torch", "torchvision", "timm"]
