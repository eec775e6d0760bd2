"""EA: attention erasure of MA-EA (docs/methods.md §3 "EA")."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.layers.hybrid import HybridAttention

Dtype = Any


def erase_mask(m, mode: str = "soft", theta: float = 0.8, stop_gradient: bool = True):
    """The erasure mask of an attention map M (B, H, W, C) (docs/methods.md §3 "EA").

    'soft': M_erase = 1 − M (B,H,W,C). 'hard': M_erase = 𝟙[mean_c M < θ · max_{h,w} mean_c M]
    (B,H,W,1), per sample. Both get stop_gradient (unless `stop_gradient=False`, for
    ablations and tests)."""
    if mode == "soft":
        mask = 1.0 - m
    elif mode == "hard":
        s = jnp.mean(m, axis=-1, keepdims=True)
        peak = jnp.max(s, axis=(1, 2), keepdims=True)
        mask = (s < theta * peak).astype(m.dtype)
    else:
        raise ValueError(f"erase mode must be 'soft' or 'hard', got {mode!r}")
    return jax.lax.stop_gradient(mask) if stop_gradient else mask


class MAEA(nn.Module):
    """MA-EA block on one stage output F (docs/methods.md §3):
    F', M = MA(F); F_erased = F ⊗ M_erase(M) — the ORIGINAL F, not F'; F'' = MA_2(F_erased).
    `rounds` > 1 repeats EA→MA on the result (each round's input is the previous erased map
    and its own MA; choice: a separate MA per round, as "a second MA" reads).

    Returns [F', F''_1, ..., F''_rounds], and with `return_maps` also the maps
    [M, M_1, ..., M_rounds] of each MA (for display)."""

    reduction: int = 16
    residual: bool = True
    mode: str = "soft"
    theta: float = 0.8
    rounds: int = 1
    stop_gradient: bool = True
    return_maps: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, f):
        ma = dict(
            reduction=self.reduction,
            residual=self.residual,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        out, m = HybridAttention(**ma, name="ma")(f)
        outs, maps = [out], [m]
        base = f
        for r in range(self.rounds):
            base = base * erase_mask(m, self.mode, self.theta, self.stop_gradient)
            out, m = HybridAttention(**ma, name=f"ma_erased{r + 1}")(base)
            outs.append(out)
            maps.append(m)
        return (outs, maps) if self.return_maps else outs
