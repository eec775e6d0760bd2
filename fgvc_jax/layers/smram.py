"""SMRAM: the spatial multi-region attention of CRA-SMRA (Neural Processing Letters 57:43,
2025), acting only through the diversity loss (the paper: "average pooling, batch
normalization, softmax, CCMP and diversity loss")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers.cram import ConvBNReLU
from fgvc_jax.runtime.precision import upcast

Dtype = Any
DOWNSAMPLES = ("avgpool", "conv")


class SMRAM(nn.Module):
    """SMRAM: bring each enhanced map X_e to the last one's spatial size — `down='avgpool'`
    (choice, the paper's "average pooling, batch normalization": non-overlapping average
    pooling by the size ratio, then BN; no other weights) or `down='conv'` (3x3 stride-2
    conv+BN+ReLU blocks, as many as halvings are needed) —, φ_s = a separate 1x1 conv C_a→1
    per stage, and P_s = softmax over the H·W positions.

    Input: a list of (B, H_s, W_s, C_a) maps. Returns P (B, S, H·W), float32; feed it to
    `fgvc_jax.methods.losses.diversity_loss` (CCMP + L_div)."""

    down: str = "avgpool"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, maps: Sequence[jax.Array], train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.down not in DOWNSAMPLES:
            raise ValueError(f"method.smram_down={self.down!r}; valid: {', '.join(DOWNSAMPLES)}")
        target = maps[-1].shape[1]
        probs = []
        for s, x in enumerate(maps):
            if self.down == "avgpool" and x.shape[1] > target:
                f = x.shape[1] // target
                x = nn.avg_pool(x, (f, f), strides=(f, f))
                x = BatchNorm(name=f"pool_bn{s}", **kw)(x, train)
            i = 0
            while self.down == "conv" and x.shape[1] > target:
                x = ConvBNReLU(x.shape[-1], 3, strides=2, name=f"down{s}_{i}", **kw)(x, train)
                i += 1
            if x.shape[1:3] != maps[-1].shape[1:3]:
                raise ValueError(
                    f"SMRAM: map {s} reaches {x.shape[1:3]}, expected {maps[-1].shape[1:3]}"
                )
            logit = nn.Conv(1, (1, 1), name=f"phi{s}", **kw)(x)  # (B, H, W, 1)
            logit = upcast(logit.reshape(x.shape[0], -1))
            probs.append(jax.nn.softmax(logit, axis=-1))
        return jnp.stack(probs, axis=1)
