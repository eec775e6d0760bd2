"""Methods by name. Each method's config fields and their defaults are its own
(`Method.defaults(size)` in `methods/<name>.py`); this file only names them.

`size='full'` is the paper's model (ResNet-50 at 448, Swin-B at 384); `size='cpu'` the same
code at 64 px with a ResNet-18 or a small Swin (embed 32, depths 2-2-2-2, heads 1-2-4-8,
window 4), for the quick start and the tests."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from fgvc_jax.methods.attention_cnn import AttentionCNNMethod
from fgvc_jax.methods.base import Method
from fgvc_jax.methods.baseline import BaselineResNet, BaselineSwin
from fgvc_jax.methods.cra_smra import CRASMRA
from fgvc_jax.methods.ma_ea import MAEAMethod
from fgvc_jax.methods.swinfc import SwinFC
from fgvc_jax.suggest import did_you_mean

METHODS: dict[str, type[Method]] = {
    "baseline_resnet": BaselineResNet,
    "baseline_swin": BaselineSwin,
    "ma_ea": MAEAMethod,
    "cra_smra": CRASMRA,
    "swinfc": SwinFC,
    "attention_cnn": AttentionCNNMethod,
}
SIZES = ("full", "cpu")


def _check_name(name: str) -> None:
    if name not in METHODS:
        raise ValueError(
            f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}."
            + did_you_mean(name, METHODS)
        )


def default_config(name: str, size: str = "full") -> ml_collections.ConfigDict:
    """`config.method` of method `name`: every field at the method's default."""
    _check_name(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for method {name!r}; valid: {', '.join(SIZES)}")
    return ml_collections.ConfigDict(
        dict(name=name, size=size, label_smoothing=0.0, **METHODS[name].defaults(size))
    )


def create(config: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32) -> Method:
    """The Method named by `config.name`, computing in `dtype`. Unknown fields are an error."""
    name = config.get("name", None)
    _check_name(name)
    known = set(default_config(name, config.get("size", "full")))
    extra = sorted(set(config) - known)
    if extra:
        raise ValueError(
            f"method {name!r} has no config field(s) {extra}; "
            f"valid fields: {', '.join(sorted(known))}"
        )
    return METHODS[name](config, num_classes, dtype)
