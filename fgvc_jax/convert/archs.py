"""Architectures the converter knows: torchvision ResNets and DenseNets, timm / official Swin
releases."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax.backbones import densenet as densenet_lib
from fgvc_jax.backbones import resnet as resnet_lib
from fgvc_jax.backbones import swin as swin_lib
from fgvc_jax.convert.mapping import convert
from fgvc_jax.convert.source import ConversionError, read_state_dict

ARCHS = sorted(resnet_lib.ARCHS) + sorted(densenet_lib.ARCHS) + sorted(swin_lib.ARCHS)
_HEAD = re.compile(r"^(fc|classifier|head|head\.fc)\.(weight|bias)$")
_SWIN_BUFFERS = ("relative_position_index", "attn_mask")


def build(arch: str, num_classes: int = 0, **overrides):
    """The flax backbone for `arch` (overrides: e.g. stem_pool, dilate_conv5, img_size, window_size)."""
    if arch in resnet_lib.ARCHS:
        return resnet_lib.resnet(arch, num_classes=num_classes, **overrides)
    if arch in densenet_lib.ARCHS:
        return densenet_lib.densenet(arch, num_classes=num_classes, **overrides)
    if arch in swin_lib.ARCHS:
        return swin_lib.swin(arch, num_classes=num_classes, **overrides)
    raise ConversionError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _official_swin_to_timm(key: str) -> str:
    """Official Swin release: patch merging at the end of stage i (timm: start of i+1) and
    `head.*` (timm: `head.fc.*`)."""
    key = re.sub(
        r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key
    )
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


# torchvision's published DenseNet weights name the dense layer's modules 'norm.1', 'conv.2'
# (dots are no longer allowed in module names); torchvision's `_load_state_dict` renames them
# with this pattern. Both forms are accepted.
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


def densenet_key(key: str) -> str:
    """`features.denseblock1.denselayer1.norm.1.weight` → `....denselayer1.norm1.weight`."""
    return _DENSENET_LEGACY.sub(r"\1\2", key)


def _head_classes(sd: dict[str, np.ndarray]) -> int:
    for k in ("fc.weight", "classifier.weight", "head.fc.weight", "head.weight"):
        if k in sd:
            return sd[k].shape[0]
    return 0


def convert_state_dict(
    arch: str, sd: dict[str, np.ndarray], num_classes: int | None = 0, **overrides
) -> dict:
    """torch state dict → flax variables of `build(arch, ...)`.

    num_classes=None keeps the checkpoint's classifier; 0 (or any number differing from the
    checkpoint's) drops it and, for > 0, leaves a freshly initialised head to the caller."""
    keep_head = num_classes is None or (num_classes and num_classes == _head_classes(sd))
    n = _head_classes(sd) if keep_head else 0
    model = build(arch, n, **overrides)
    size = model.img_size if arch in swin_lib.ARCHS else 64
    shape = (1, size, size, 3)
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32))
    )
    target = dict(target)
    rename, windows = (lambda k: k), None
    drop_buffers = ("num_batches_tracked",)
    if arch in densenet_lib.ARCHS:
        rename = densenet_key
    if arch in swin_lib.ARCHS:
        drop_buffers = _SWIN_BUFFERS
        if "layers.0.downsample.reduction.weight" in sd:
            rename = _official_swin_to_timm
        windows = _swin_windows(model)

    def drop(k):
        return k.endswith(drop_buffers) or (not keep_head and bool(_HEAD.match(k)))

    return convert(sd, target, drop=drop, rename=rename, windows=windows)


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


def load_pretrained(arch: str, path: str, num_classes: int | None = 0, **overrides) -> dict:
    """Flax variables ({'params', 'batch_stats'?}) of `arch` from a torchvision/timm/official
    weights file, or from a directory written by `python -m fgvc_jax.convert`."""
    import os

    if os.path.isdir(os.path.expanduser(path)):
        from fgvc_jax.convert.store import restore

        return restore(path)
    return convert_state_dict(arch, read_state_dict(path), num_classes, **overrides)
