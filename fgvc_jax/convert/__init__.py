"""PyTorch → flax weight conversion (torchvision ResNet and DenseNet, timm and official Swin)."""

from fgvc_jax.convert.archs import ARCHS, build, convert_state_dict, load_pretrained
from fgvc_jax.convert.source import ConversionError, read_state_dict

__all__ = [
    "ARCHS",
    "build",
    "convert_state_dict",
    "load_pretrained",
    "ConversionError",
    "read_state_dict",
]
