"""Attention blocks of docs/methods.md §1 (SE, CBAM, non-local, scaled self-attention, coordinate).

All blocks take NHWC feature maps (B, H, W, C) and return the same shape unless noted.
Modules with `return_map=True` return the attention map instead of the reweighted input
(MA and CRAM build on the maps).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones import conv
from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.runtime.precision import upcast

Dtype = Any


def _hidden(channels: int, reduction: int, minimum: int = 1) -> int:
    return max(channels // reduction, minimum)


class SE(nn.Module):
    """Squeeze-and-excitation (docs/methods.md §1 "SE"): w = σ(W2 ReLU(W1 GAP x)), out = x·w.

    Dense layers with bias, hidden width C/r (r = 16)."""

    reduction: int = 16
    return_map: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.Dense(
            _hidden(c, self.reduction), dtype=self.dtype, param_dtype=self.param_dtype, name="fc1"
        )(s)
        s = nn.relu(s)
        s = nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(s)
        w = nn.sigmoid(s)  # (B, 1, 1, C)
        return w if self.return_map else x * w


class CBAMChannel(nn.Module):
    """CBAM channel attention (docs/methods.md §1 "CBAM channel"):
    w = σ(MLP(GAP x) + MLP(GMP x)), shared MLP C→C/r→C with ReLU and no bias; out = x·w."""

    reduction: int = 16
    return_map: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        fc1 = nn.Dense(
            _hidden(c, self.reduction),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc1",
        )
        fc2 = nn.Dense(
            c, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2"
        )

        def mlp(v):
            return fc2(nn.relu(fc1(v)))

        avg = jnp.mean(x, axis=(1, 2), keepdims=True)
        mx = jnp.max(x, axis=(1, 2), keepdims=True)
        w = nn.sigmoid(mlp(avg) + mlp(mx))  # (B, 1, 1, C)
        return w if self.return_map else x * w


class CBAMSpatial(nn.Module):
    """CBAM spatial attention (docs/methods.md §1 "CBAM spatial"):
    s = σ(Conv7x7([mean_c x, max_c x])) without bias; out = x·s (not the conv output: the
    source snippet's bug is not reproduced)."""

    kernel_size: int = 7
    return_map: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        pooled = jnp.concatenate(
            [jnp.mean(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True)], axis=-1
        )
        s = nn.Conv(
            1,
            (k, k),
            padding=[(k // 2, k // 2)] * 2,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
            conv_general_dilated=conv.conv_general_dilated,  # small maps: taps as matmuls
        )(pooled)
        s = nn.sigmoid(s)  # (B, H, W, 1)
        return s if self.return_map else x * s


def _conv1x1(features, name, dtype, param_dtype, use_bias=True):
    return nn.Conv(
        features, (1, 1), use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name
    )


def _position_attention(x, reduction, scaled, dtype, param_dtype):
    """Σ_j softmax_j(q_iᵀk_j [/√d]) v_j over the H·W positions, with q, k = 1x1 conv C→C/r and
    v = 1x1 conv C→C named query/key/value in the calling module (NonLocal, ScaledSelfAttention)."""
    b, h, w, c = x.shape
    ck = _hidden(c, reduction)
    q = _conv1x1(ck, "query", dtype, param_dtype)(x).reshape(b, h * w, ck)
    k = _conv1x1(ck, "key", dtype, param_dtype)(x).reshape(b, h * w, ck)
    v = _conv1x1(c, "value", dtype, param_dtype)(x).reshape(b, h * w, c)
    logits = upcast(jnp.einsum("bic,bjc->bij", q, k))
    if scaled:
        logits = logits / jnp.sqrt(float(ck))
    a = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bij,bjc->bic", a.astype(dtype), v).reshape(b, h, w, c)


class NonLocal(nn.Module):
    """Non-local self-attention (docs/methods.md §1, SAGAN form): q, k = 1x1 conv C→C/8,
    v = 1x1 conv C→C (with bias); A = softmax_j(q_iᵀ k_j) over positions;
    out_i = γ Σ_j A_ij v_j + x_i with the scalar γ initialised to 0."""

    reduction: int = 8
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        out = _position_attention(x, self.reduction, False, self.dtype, self.param_dtype)
        gamma = self.param("gamma", nn.initializers.zeros, (), self.param_dtype)
        return gamma.astype(self.dtype) * out + x


class ScaledSelfAttention(nn.Module):
    """Scaled self-attention of the tutorial (docs/methods.md §1): as `NonLocal` with the logits
    scaled by 1/sqrt(C/8), no γ and no residual: out_i = Σ_j softmax_j(q_iᵀk_j/√d) v_j."""

    reduction: int = 8
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return _position_attention(x, self.reduction, True, self.dtype, self.param_dtype)


def hard_swish(x):
    """h-swish(x) = x·ReLU6(x + 3)/6 (as torch.nn.Hardswish)."""
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021; docs/methods.md §1 "for completeness"):
    pool along W and along H, shared 1x1 conv C→max(8, C/r) + BN + h-swish on the joined
    strips, then per-direction 1x1 conv → sigmoid; out = x · a_h · a_w (r = 32)."""

    reduction: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        b, h, w, c = x.shape
        mip = _hidden(c, self.reduction, minimum=8)
        x_h = jnp.mean(x, axis=2)  # (B, H, C)
        x_w = jnp.mean(x, axis=1)  # (B, W, C)
        y = jnp.concatenate([x_h, x_w], axis=1)[:, :, None, :]  # (B, H+W, 1, C)
        y = _conv1x1(mip, "conv1", self.dtype, self.param_dtype)(y)
        y = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn1")(y, train)
        y = hard_swish(y)
        y_h, y_w = y[:, :h], y[:, h:]
        a_h = nn.sigmoid(_conv1x1(c, "conv_h", self.dtype, self.param_dtype)(y_h))  # (B,H,1,C)
        a_w = nn.sigmoid(_conv1x1(c, "conv_w", self.dtype, self.param_dtype)(y_w))  # (B,W,1,C)
        return x * a_h * jnp.transpose(a_w, (0, 2, 1, 3))
