"""A method's backbone from its config: the backbone fields every method shares, their
defaults per size, and the flax backbone they build.

Fields: `backbone` (a `fgvc_jax.convert` arch name, e.g. 'resnet50', 'densenet161',
'swin_base_patch4_window12_384'), `image_size`; for ResNets `stem_pool`, `dilate_conv5`
(ignored by DenseNets, which have neither); for Swins `drop_path_rate` and
`backbone_overrides` (any SwinTransformer field, used by the CPU-sized variants)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fgvc_jax.backbones import densenet as densenet_lib
from fgvc_jax.backbones import resnet as resnet_lib
from fgvc_jax.backbones import swin as swin_lib

#: The CPU-sized Swin: embed 32, depths 2-2-2-2, heads 1-2-4-8, window 4 (at 64 px).
CPU_SWIN = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4)


def resnet_fields(size: str, stem_pool: str = "max") -> dict:
    """ResNet-50 at 448 ('full') or ResNet-18 at 64 px ('cpu')."""
    full = size == "full"
    return dict(
        backbone="resnet50" if full else "resnet18",
        image_size=448 if full else 64,
        stem_pool=stem_pool,
        dilate_conv5=False,
    )


def swin_fields(size: str) -> dict:
    """Swin-B/384 window 12 ('full') or the CPU-sized Swin at 64 px ('cpu')."""
    full = size == "full"
    return dict(
        backbone="swin_base_patch4_window12_384" if full else "swin_tiny_patch4_window7_224",
        image_size=384 if full else 64,
        drop_path_rate=0.0,
        backbone_overrides={} if full else dict(CPU_SWIN),
    )


def is_swin(arch: str) -> bool:
    return arch in swin_lib.ARCHS


def backbone_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Constructor overrides of the backbone beyond its arch (also what the converter needs
    to build the same backbone: `fgvc_jax.convert.load_pretrained(arch, path, 0, **kw)`)."""
    arch = config.backbone
    if arch in resnet_lib.ARCHS:
        return dict(stem_pool=config.stem_pool, dilate_conv5=config.dilate_conv5)
    if arch in densenet_lib.ARCHS:
        return {}
    if arch in swin_lib.ARCHS:
        kw = dict(img_size=config.image_size, drop_path_rate=config.drop_path_rate)
        kw.update(
            {
                k: tuple(v) if isinstance(v, list) else v
                for k, v in (config.backbone_overrides or {}).items()
            }
        )
        return kw
    valid = sorted(resnet_lib.ARCHS) + sorted(densenet_lib.ARCHS) + sorted(swin_lib.ARCHS)
    raise ValueError(f"method.backbone={arch!r}; valid: {', '.join(valid)}")


def build_backbone(config: ml_collections.ConfigDict, dtype) -> nn.Module:
    """The headless (num_classes=0) backbone computing in `dtype`, float32 parameters."""
    kw = dict(num_classes=0, dtype=dtype, param_dtype=jnp.float32, **backbone_kwargs(config))
    if is_swin(config.backbone):
        return swin_lib.swin(config.backbone, **kw)
    if config.backbone in densenet_lib.ARCHS:
        return densenet_lib.densenet(config.backbone, **kw)
    return resnet_lib.resnet(config.backbone, **kw)
