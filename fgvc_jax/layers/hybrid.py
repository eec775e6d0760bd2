"""MA: the hybrid (channel x spatial) attention of MA-EA (docs/methods.md §3 "MA")."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.layers.attention import SE, CBAMSpatial

Dtype = Any


class HybridAttention(nn.Module):
    """MA (docs/methods.md §3): M_c = SE-style channel map (B,1,1,C; r = 16) and M_s = CBAM-style
    spatial map (B,H,W,1), both computed in parallel from F; M = M_c ⊙ M_s;
    F' = F + F ⊙ M (`residual=True`, choice `ma_residual`) or F' = F ⊙ M.

    Returns (F', M) with M of shape (B, H, W, C)."""

    reduction: int = 16
    residual: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, f):
        m_c = SE(
            self.reduction,
            return_map=True,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="channel",
        )(f)
        m_s = CBAMSpatial(
            return_map=True, dtype=self.dtype, param_dtype=self.param_dtype, name="spatial"
        )(f)
        m = m_c * m_s
        out = f + f * m if self.residual else f * m
        return out, m
