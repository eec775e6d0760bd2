"""Building a method's backbone from its config (METHODS.md §0), shared by all methods.

Config fields read here: `backbone` (a `fgvc_jax.convert` arch name, e.g. 'resnet50',
'swin_base_patch4_window12_384'), `image_size`, `dtype`, and for ResNets `stem_pool`,
`dilate_conv5`; for Swins `drop_path_rate` and `backbone_overrides` (any SwinTransformer
field, used by the CPU-sized variants)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fgvc_jax.backbones import resnet as resnet_lib
from fgvc_jax.backbones import swin as swin_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(config: ml_collections.ConfigDict):
    name = config.get("dtype", "float32")
    if name not in DTYPES:
        raise ValueError(f"method.dtype={name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def is_swin(arch: str) -> bool:
    return arch in swin_lib.ARCHS


def backbone_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Constructor overrides of the backbone beyond its arch (also what the converter needs
    to build the same backbone: `fgvc_jax.convert.load_pretrained(arch, path, 0, **kw)`)."""
    arch = config.backbone
    if arch in resnet_lib.ARCHS:
        return dict(stem_pool=config.get("stem_pool", "max"),
                    dilate_conv5=config.get("dilate_conv5", False))
    if arch in swin_lib.ARCHS:
        kw = dict(img_size=config.image_size, drop_path_rate=config.get("drop_path_rate", 0.0))
        overrides = config.get("backbone_overrides", None)
        if overrides:
            kw.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
        return kw
    raise ValueError(f"method.backbone={arch!r}; valid: "
                     f"{', '.join(sorted(resnet_lib.ARCHS) + sorted(swin_lib.ARCHS))}")


def build_backbone(config: ml_collections.ConfigDict) -> nn.Module:
    """The headless (num_classes=0) backbone, computing in the method's dtype, fp32 params."""
    kw = dict(num_classes=0, dtype=compute_dtype(config), param_dtype=jnp.float32,
              **backbone_kwargs(config))
    if is_swin(config.backbone):
        return swin_lib.swin(config.backbone, **kw)
    return resnet_lib.resnet(config.backbone, **kw)
