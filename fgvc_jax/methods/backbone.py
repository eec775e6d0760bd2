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

from fgvc_jax.backbones import registry

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


def backbone_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Constructor overrides of the backbone beyond its arch (also what the converter needs
    to build the same backbone: `fgvc_jax.convert.load_pretrained(arch, path, 0, **kw)`)."""
    try:
        family = registry.family(config.backbone)
    except ValueError:
        raise ValueError(
            f"method.backbone={config.backbone!r}; valid: {', '.join(registry.ARCHS)}"
        ) from None
    return family.fields(config)


def build_backbone(config: ml_collections.ConfigDict, dtype) -> nn.Module:
    """The headless (num_classes=0) backbone computing in `dtype`, float32 parameters."""
    kw = backbone_kwargs(config)
    family = registry.family(config.backbone)
    return family.build(config.backbone, num_classes=0, dtype=dtype, param_dtype=jnp.float32, **kw)
