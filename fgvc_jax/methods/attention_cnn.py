"""attention_cnn: the tutorial's `AttentionClassifier`, the small CPU model.

3 x [conv3x3 (pad 1) → ReLU → maxpool 2] with widths 64/128/256 → scaled self-attention →
flatten → Dense 512 → ReLU → dropout 0.5 → Dense K. Trained from scratch (no backbone
weights)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fgvc_jax.layers import ScaledSelfAttention
from fgvc_jax.methods import losses, registry
from fgvc_jax.methods.base import Method, Outputs


class AttentionCNN(nn.Module):
    num_classes: int
    widths: Sequence[int]
    hidden: int
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        x = images.astype(self.dtype)
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Conv(w, (3, 3), padding=[(1, 1), (1, 1)], name=f"conv{i + 1}", **kw)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ScaledSelfAttention(name="attention", **kw)(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, name="fc1", **kw)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        logits = {"main": nn.Dense(self.num_classes, name="fc2", **kw)(x)}
        return Outputs(logits=logits, aux={"maps": {}} if explain else {})


class AttentionCNNMethod(Method):
    """Config fields: widths, hidden, dropout, image_size (the input it is built for)."""

    twin = "fgvc_jax.reference.attention_cnn:AttentionCNN"

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32):
        super().__init__(config, num_classes, dtype)
        self._network = AttentionCNN(
            num_classes, tuple(config.widths), config.hidden, config.dropout, dtype
        )

    @classmethod
    def defaults(cls, size):
        """One size: it is the CPU model (64 px)."""
        return dict(image_size=64, widths=(64, 128, 256), hidden=512, dropout=0.5)

    @property
    def network(self):
        return self._network

    def loss(self, outputs, labels, targets=None):
        ce = losses.cross_entropy(
            outputs.logits["main"], labels, self.config.label_smoothing, targets
        )
        return ce, {"ce_main": ce}

    def param_groups(self):
        return {"new": r".*"}


registry.register("attention_cnn", AttentionCNNMethod)
