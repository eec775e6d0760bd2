"""FFM: the feature fusion module of SwinFC (Computer Engineering and Applications 2023,
59(20), Eq. 7-12), after FBSD (Song & Yang, IJCNN 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.runtime.precision import upcast

Dtype = Any


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(‖x‖₂, eps), as torch.nn.functional.normalize."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


SIMILARITIES = ("dot", "cosine")


class FFM(nn.Module):
    """FFM of SwinFC (Eq. 7-12; the paper cites FBSD for it), parameter-free. For branches
    i ≠ j with tokens X_i (N_i x C): M_ij = X_i X_jᵀ (Eq. 7: a plain dot product,
    `similarity='dot'`; FBSD's code L2-normalises the channels first, `'cosine'`) and
    X̃_i[p] = X_i[p] + s · Σ_{j≠i} Σ_q softmax_q(−M_ij[p, q]) X_j[q] (Eq. 8-12, s = `scale`:
    1 in the paper, FBSD's code multiplies the fused term by 0.001): the least similar
    (complementary) content of branch j is added at branch i's positions.

    Input: a list of (B, H_i, W_i, C) maps with equal C; returns the list of fused maps."""

    similarity: str = "dot"
    scale: float = 1.0

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]):
        if self.similarity not in SIMILARITIES:
            raise ValueError(
                f"method.ffm_similarity={self.similarity!r}; valid: {', '.join(SIMILARITIES)}"
            )
        toks = [x.reshape(x.shape[0], -1, x.shape[-1]) for x in xs]
        keys = [upcast(t) for t in toks]
        if self.similarity == "cosine":
            keys = [l2_normalize(k) for k in keys]
        outs = []
        for i, x in enumerate(xs):
            fused = jnp.zeros_like(toks[i])
            for j in range(len(xs)):
                if j == i:
                    continue
                m = jnp.einsum("bpc,bqc->bpq", keys[i], keys[j])
                w = jax.nn.softmax(-m, axis=-1).astype(toks[j].dtype)
                fused = fused + jnp.einsum("bpq,bqc->bpc", w, toks[j])
            outs.append((toks[i] + self.scale * fused).reshape(x.shape))
        return outs
