"""SwinFC's branch attention EACA = external attention + cross-space attention
(docs/methods.md §4 "EACA"). Inputs are NHWC token maps (B, H, W, C); tokens are taken in raster
order (N = H·W)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.runtime.precision import upcast

Dtype = Any


class ExternalAttention(nn.Module):
    """External attention with double normalisation (docs/methods.md §4 "EA"):
    A' = Conv1d_k3(X) (C→M, no bias, pad 1 along the raster token axis);
    A = double-norm(A'): softmax over the N tokens, then divide by the sum over the M memory
    units (+1e-9); X̌ = Conv1d_k1(A) (M→C, with bias); EA(X) = X + X̌."""

    memory: int = 64
    eps: float = 1e-9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        t = x.reshape(b, h * w, c)
        a = nn.Conv(
            self.memory,
            (3,),
            padding=[(1, 1)],
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mk",
        )(t)  # (B, N, M)
        a = jax.nn.softmax(upcast(a), axis=1)
        a = a / (jnp.sum(a, axis=2, keepdims=True) + self.eps)
        out = nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name="mv")(
            a.astype(self.dtype)
        )
        return x + out.reshape(b, h, w, c)


class CrossSpaceAttention(nn.Module):
    """Cross-space attention (docs/methods.md §4 "CA"): X_H = mean over W, X_W = mean over H;
    A_H = softmax over H of Conv(3x1)(X_H), A_W = softmax over W of Conv(1x3)(X_W) (dense
    C→C, bias, pad 1); CA(X) = X ⊗ (A_H + A_W) broadcast sum, no residual."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        conv = dict(padding=[(1, 1)], dtype=self.dtype, param_dtype=self.param_dtype)
        x_h = nn.Conv(c, (3,), name="conv_h", **conv)(jnp.mean(x, axis=2))  # (B, H, C)
        x_w = nn.Conv(c, (3,), name="conv_w", **conv)(jnp.mean(x, axis=1))  # (B, W, C)
        a_h = jax.nn.softmax(upcast(x_h), axis=1).astype(self.dtype)
        a_w = jax.nn.softmax(upcast(x_w), axis=1).astype(self.dtype)
        return x * (a_h[:, :, None, :] + a_w[:, None, :, :])


class EACA(nn.Module):
    """EACA (Eq. 1-6): X' = EA(X) + CA(X), both on the same input. With `use_ea` or `use_ca`
    off, that term alone (the paper's +EA / +CA ablations); both off: the identity."""

    memory: int = 64
    use_ea: bool = True
    use_ca: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        terms = []
        if self.use_ea:
            terms.append(ExternalAttention(self.memory, name="ea", **kw)(x))
        if self.use_ca:
            terms.append(CrossSpaceAttention(name="ca", **kw)(x))
        return sum(terms) if terms else x
