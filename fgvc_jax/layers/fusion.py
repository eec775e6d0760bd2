"""FFM: the feature fusion module of SwinFC, from FBSD (Song & Yang, IJCNN 2021)
(METHODS.md §4 "FFM")."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(‖x‖₂, eps), as torch.nn.functional.normalize."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class FFM(nn.Module):
    """FFM (METHODS.md §4), parameter-free. For branches i ≠ j with tokens X_i (N_i x C):
    M_ij = norm(X_i) norm(X_j)ᵀ (cosine over channels, choice) and
    X̃_i[p] = X_i[p] + Σ_{j≠i} Σ_q softmax_q(−M_ij[p, q]) X_j[q]:
    the least similar (complementary) content of branch j is added at branch i's positions.

    Input: a list of (B, H_i, W_i, C) maps with equal C; returns the list of fused maps."""

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]):
        toks = [x.reshape(x.shape[0], -1, x.shape[-1]) for x in xs]
        normed = [l2_normalize(t.astype(jnp.float32)) for t in toks]
        outs = []
        for i, x in enumerate(xs):
            acc = toks[i]
            for j in range(len(xs)):
                if j == i:
                    continue
                m = jnp.einsum("bpc,bqc->bpq", normed[i], normed[j])
                w = jax.nn.softmax(-m, axis=-1).astype(toks[j].dtype)
                acc = acc + jnp.einsum("bpq,bqc->bpc", w, toks[j])
            outs.append(acc.reshape(x.shape))
        return outs
