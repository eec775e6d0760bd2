"""Pieces several methods share: a backbone-based Method base class, the Swin trunk walker,
and pooling."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fgvc_jax.methods import backbone as backbone_lib
from fgvc_jax.methods import losses
from fgvc_jax.methods.base import Method
from fgvc_jax.runtime.precision import upcast

#: Module fields that are not method settings.
_NOT_SETTINGS = {"backbone", "num_classes", "dtype", "parent", "name"}


def _frozen(value):
    """Config values as module fields: lists (from JSON) → tuples."""
    return tuple(value) if isinstance(value, list) else value


class BackboneMethod(Method):
    """A Method whose network `Net` drives a pretrained backbone (`config.backbone`).

    The network is built as `Net(backbone, num_classes, dtype=dtype, **fields)`, the fields
    being the config fields named like `Net`'s own (which have no defaults: `defaults` is
    the one place a method's choices are written)."""

    Net: type[nn.Module]

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32):
        super().__init__(config, num_classes, dtype)
        names = {f.name for f in dataclasses.fields(self.Net)} - _NOT_SETTINGS
        self._network = self.Net(
            backbone_lib.build_backbone(config, dtype),
            num_classes,
            dtype=dtype,
            **{k: _frozen(config[k]) for k in sorted(names)},
        )

    @property
    def network(self) -> nn.Module:
        return self._network

    @property
    def backbone_arch(self) -> str:
        return self.config.backbone

    @property
    def backbone_kwargs(self) -> dict:
        return backbone_lib.backbone_kwargs(self.config)

    def ce(self, logits, labels, targets=None):
        return losses.cross_entropy(logits, labels, self.config.label_smoothing, targets)


def mean_softmax(logits: dict, keys) -> jax.Array:
    """Mean of the softmaxes of the named heads (float32)."""
    return sum(jax.nn.softmax(upcast(logits[k]), axis=-1) for k in keys) / len(keys)


#: How a multi-head method combines its heads into one prediction (`method.combine`).
COMBINES = ("softmax_mean", "logit_sum")


def combine(logits: dict, keys, how: str) -> jax.Array:
    """The named heads as one prediction, class probabilities (B, K) float32:
    'softmax_mean', the mean of their softmaxes (CRA-SMRA's paper); 'logit_sum', the softmax
    of the sum of their logits (FBSD's code predicts the argmax of the summed logits)."""
    if how == "softmax_mean":
        return mean_softmax(logits, keys)
    if how == "logit_sum":
        return jax.nn.softmax(sum(upcast(logits[k]) for k in keys), axis=-1)
    raise ValueError(f"method.combine={how!r}; valid: {', '.join(COMBINES)}")


def avg_max_pool(x):
    """concat(GAP x, GMP x) over H, W: (B, H, W, C) → (B, 2C) (MA-EA's improved pooling)."""
    return jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)


def channel_mean(x) -> jax.Array:
    """(B, H, W, C) → (B, H, W) float32: how a feature map is shown."""
    return jnp.mean(upcast(x), axis=-1)


def swin_trunk(backbone, images, train: bool, attn_stage: int | None = None):
    """Run a Swin stage by stage. Returns (stage outputs [s1..s4] (B,H,W,C), final normed
    stage-4 output, attention probs of `attn_stage`'s blocks or None)."""
    x = backbone.embed(images)
    feats, attn = [], None
    for i in range(1, len(backbone.depths) + 1):
        if i == attn_stage:
            x, attn = backbone.stage(i, x, train, return_attn=True)
        else:
            x = backbone.stage(i, x, train)
        feats.append(x)
    return feats, backbone.norm(x), attn
