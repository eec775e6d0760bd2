"""CRAM: the channel attention that enhances a stage's features for its head and
suppresses its most important channels for the next stage (METHODS.md §2 "CRAM")."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers.attention import CBAMChannel

Dtype = Any


class ConvBNReLU(nn.Module):
    """Conv (no bias, explicit symmetric padding k//2) → BN (torch semantics, eps 1e-5,
    momentum 0.9 = torch 0.1) → ReLU: the PMG/FBSD BasicConv."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k, p = self.kernel_size, self.kernel_size // 2
        x = nn.Conv(self.features, (k, k), strides=self.strides, padding=[(p, p), (p, p)],
                    use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="conv")(x)
        x = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x, train)
        return nn.relu(x)


def suppression_mask(importance, omega: float = 0.5, delta: float = 0.9):
    """S_c = 1 − ω·𝟙[I*_c ≥ δ·max_c I*], I* = softmax over channels of I (choice of
    METHODS.md §2); the indicator gets stop_gradient. importance: (B, 1, 1, C)."""
    p = jax.nn.softmax(importance.astype(jnp.float32), axis=-1)
    top = jnp.max(p, axis=-1, keepdims=True)
    ind = jax.lax.stop_gradient((p >= delta * top).astype(importance.dtype))
    return 1.0 - omega * ind


class CRAM(nn.Module):
    """CRAM (METHODS.md §2) on a stage output X (B, H, W, C):
    I = σ(MLP(GAP X) + MLP(GMP X)) (shared MLP C→C/16→C, ReLU, no bias);
    X_e = ConvLayer(X ⊗ I), ConvLayer = [1x1 conv C→`mid`, BN, ReLU, 3x3 conv `mid`→`out`,
    BN, ReLU] (choice C_a = 1024); X_s = X ⊗ S with S = `suppression_mask(I)`, applied in
    training only unless `suppress_at_eval` (choice).

    Returns (X_e, X_s)."""

    reduction: int = 16
    mid: int = 512
    out: int = 1024
    omega: float = 0.5
    delta: float = 0.9
    suppress_at_eval: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        importance = CBAMChannel(self.reduction, return_map=True, name="channel", **kw)(x)
        e = ConvBNReLU(self.mid, 1, name="conv_layer1", **kw)(x * importance, train)
        e = ConvBNReLU(self.out, 3, name="conv_layer2", **kw)(e, train)
        if train or self.suppress_at_eval:
            s = x * suppression_mask(importance, self.omega, self.delta).astype(x.dtype)
        else:
            s = x
        return e, s
