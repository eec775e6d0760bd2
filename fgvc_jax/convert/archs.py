"""Architectures the converter knows: torchvision ResNets and DenseNets, timm / official Swin
releases."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax.backbones import registry
from fgvc_jax.convert import store
from fgvc_jax.convert.mapping import convert
from fgvc_jax.convert.source import ConversionError, read_state_dict

ARCHS = registry.ARCHS
_HEAD = re.compile(r"^(fc|classifier|head|head\.fc)\.(weight|bias)$")

#: Kept for the callers that rename DenseNet keys themselves (the twins' weight map).
densenet_key = registry.densenet_key


def build(arch: str, num_classes: int = 0, **overrides):
    """The flax backbone for `arch` (overrides: e.g. stem_pool, dilate_conv5, img_size, window_size)."""
    return _family(arch).build(arch, num_classes=num_classes, **overrides)


def _family(arch: str) -> registry.Family:
    try:
        return registry.family(arch)
    except ValueError:
        raise ConversionError(f"unknown arch {arch!r}; expected one of {ARCHS}") from None


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
    family = _family(arch)
    model = build(arch, n, **overrides)
    size = getattr(model, "img_size", 64)
    shape = (1, size, size, 3)
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32))
    )

    def drop(k):
        return k.endswith(family.torch_buffers) or (not keep_head and bool(_HEAD.match(k)))

    return convert(
        sd,
        dict(target),
        drop=drop,
        rename=family.torch_key(sd),
        windows=family.bias_windows(model),
    )


def load_pretrained(arch: str, path: str, num_classes: int | None = 0, **overrides) -> dict:
    """Flax variables ({'params', 'batch_stats'?}) of `arch` from a torchvision/timm/official
    weights file, or from a directory written by `python -m fgvc_jax.convert`."""
    if os.path.isdir(os.path.expanduser(path)):
        return store.restore(path)
    return convert_state_dict(arch, read_state_dict(path), num_classes, **overrides)
