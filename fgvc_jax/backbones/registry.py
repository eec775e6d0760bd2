"""The backbone families (ResNet, DenseNet, Swin), one entry each: everything that differs by
family is here, and every place that needs it reads this table (the methods' backbone, the
weight converter, the PyTorch twins' backbone, Grad-CAM's stage taps).

An entry holds:
- the flax side: the published sizes (`archs`), the module class, `build(arch, **fields)`, and
  `fields(config)`: the constructor overrides a method's config selects (ResNet `stem_pool`,
  `dilate_conv5`; Swin `image_size` → `img_size`, `drop_path_rate`, `backbone_overrides`);
- the torch → flax conversion: `torch_key(state_dict)` (the rename of a release's keys to the
  canonical ones: torchvision's legacy DenseNet names, the official Swin release's layout),
  `torch_buffers` (state-dict entries with no flax counterpart) and `bias_windows(model)` (the
  Swin relative-position tables' target windows);
- the PyTorch side (torch, torchvision and timm imported on first use): `torch_model(arch,
  num_classes, **kw)`, the published model, and `torch_backbone(config)`, the headless
  backbone of a method's config (the twins');
- Grad-CAM: `tap(i)`, the name of stage i's output (ResNet `conv{i+1}_x` as the papers,
  DenseNet `denseblock{i}` as torchvision, Swin `stage{i}`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from fgvc_jax.backbones import densenet, resnet, swin


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    archs: Mapping[str, tuple]
    module: type[nn.Module]
    build: Callable[..., nn.Module]
    fields: Callable[[Any], dict]
    torch_key: Callable[[Mapping], Callable[[str], str]]
    torch_buffers: tuple[str, ...]
    bias_windows: Callable[[nn.Module], dict | None]
    torch_model: Callable[..., Any]
    torch_backbone: Callable[[Any], Any]
    tap: Callable[[int], str]


def _same(sd) -> Callable[[str], str]:
    return lambda key: key


def _no_windows(model) -> None:
    return None


def _torch():
    from fgvc_jax.reference.torch_import import modules

    return modules()  # (torch, torchvision, timm)


# ---- ResNet (torchvision) ----


def _resnet_fields(config) -> dict:
    return dict(
        stem_pool=config.get("stem_pool", "max"), dilate_conv5=config.get("dilate_conv5", False)
    )


def _torchvision_model(arch: str, num_classes: int = 1000, **kw):
    return getattr(_torch()[1].models, arch)(num_classes=num_classes, **kw)


def _torch_resnet(config):
    from torch import nn as tnn

    from fgvc_jax.reference.backbones import MultiScaleMaxPool

    f = _resnet_fields(config)
    kw = {"replace_stride_with_dilation": [False, False, True]} if f["dilate_conv5"] else {}
    model = _torchvision_model(config.backbone, **kw)
    model.fc = tnn.Identity()
    if f["stem_pool"] == "multiscale":
        model.maxpool = MultiScaleMaxPool()
    return model


# ---- DenseNet (torchvision) ----

# torchvision's published DenseNet weights name the dense layer's modules 'norm.1', 'conv.2'
# (dots are no longer allowed in module names); torchvision's `_load_state_dict` renames them
# with this pattern. Both forms are accepted.
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


def densenet_key(key: str) -> str:
    """`features.denseblock1.denselayer1.norm.1.weight` → `....denselayer1.norm1.weight`."""
    return _DENSENET_LEGACY.sub(r"\1\2", key)


def _torch_densenet(config):
    from torch import nn as tnn

    model = _torchvision_model(config.backbone)
    model.classifier = tnn.Identity()
    return model


# ---- Swin (timm layout; the official release converted) ----


def _swin_fields(config) -> dict:
    kw = dict(img_size=config.image_size, drop_path_rate=config.get("drop_path_rate", 0.0))
    overrides = dict(config.get("backbone_overrides") or {})
    kw.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return kw


def _official_swin_to_timm(key: str) -> str:
    """Official Swin release: patch merging at the end of stage i (timm: start of i+1) and
    `head.*` (timm: `head.fc.*`)."""
    key = re.sub(
        r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key
    )
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _swin_key(sd) -> Callable[[str], str]:
    official = "layers.0.downsample.reduction.weight" in sd
    return _official_swin_to_timm if official else (lambda key: key)


def _swin_windows(model) -> dict:
    """Target window per bias-table path, from the window/resolution rule of each stage."""
    out = {}
    res = model.img_size // model.patch_size
    for i, d in enumerate(model.depths):
        res = res // 2 if i else res
        w = min(res, model.window_size)
        for j in range(d):
            out[
                ("params", f"layers_{i}", f"blocks_{j}", "attn", "relative_position_bias_table")
            ] = (w, w)
    return out


def _swin_arch_fields(arch: str) -> dict:
    e, d, h, w, s = swin.ARCHS[arch]
    return dict(embed_dim=e, depths=d, num_heads=h, window_size=w, img_size=s)


def _timm_model(arch: str, num_classes: int = 1000, **kw):
    return _torch()[2].create_model(arch, pretrained=False, num_classes=num_classes, **kw)


def _torch_swin(config):
    _torch()  # torchvision's missing op schemas defined first (timm imports torchvision)
    from timm.models.swin_transformer import SwinTransformer

    kw = {**_swin_arch_fields(config.backbone), **_swin_fields(config)}
    return SwinTransformer(num_classes=0, **kw)


FAMILIES: dict[str, Family] = {
    "resnet": Family(
        name="resnet",
        archs=resnet.ARCHS,
        module=resnet.ResNet,
        build=resnet.resnet,
        fields=_resnet_fields,
        torch_key=_same,
        torch_buffers=("num_batches_tracked",),
        bias_windows=_no_windows,
        torch_model=_torchvision_model,
        torch_backbone=_torch_resnet,
        tap=lambda i: f"conv{i + 1}_x",
    ),
    "densenet": Family(
        name="densenet",
        archs=densenet.ARCHS,
        module=densenet.DenseNet,
        build=densenet.densenet,
        fields=lambda config: {},
        torch_key=lambda sd: densenet_key,
        torch_buffers=("num_batches_tracked",),
        bias_windows=_no_windows,
        torch_model=_torchvision_model,
        torch_backbone=_torch_densenet,
        tap=lambda i: f"denseblock{i}",
    ),
    "swin": Family(
        name="swin",
        archs=swin.ARCHS,
        module=swin.SwinTransformer,
        build=swin.swin,
        fields=_swin_fields,
        torch_key=_swin_key,
        torch_buffers=("relative_position_index", "attn_mask"),
        bias_windows=_swin_windows,
        torch_model=_timm_model,
        torch_backbone=_torch_swin,
        tap=lambda i: f"stage{i}",
    ),
}

#: Every architecture name, family by family.
ARCHS: list[str] = [a for f in FAMILIES.values() for a in sorted(f.archs)]


def family(arch: str) -> Family:
    """The family of `arch`; ValueError listing every valid name otherwise."""
    for f in FAMILIES.values():
        if arch in f.archs:
            return f
    raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")


def of_module(module: nn.Module) -> Family | None:
    """The family whose flax backbone `module` is, or None."""
    return next((f for f in FAMILIES.values() if isinstance(module, f.module)), None)
