"""Losses of the methods (docs/methods.md §2–4): cross-entropy, SMRAM diversity, TransFG-form
contrastive. All return float32 scalars (batch means)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fgvc_jax.layers.fusion import l2_normalize
from fgvc_jax.runtime.precision import upcast


def cross_entropy(logits, labels, label_smoothing: float = 0.0, targets=None):
    """Mean softmax cross-entropy with integer labels, or with soft `targets` (B, K) when
    given (mixup / CutMix); with label smoothing ε the target is (1 − ε)·target + ε/K (as
    torch.nn.CrossEntropyLoss(label_smoothing=ε))."""
    logits = upcast(logits)
    k = logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jax.nn.one_hot(labels, k, dtype=jnp.float32) if targets is None else upcast(targets)
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / k
    return -jnp.mean(jnp.sum(target * logp, axis=-1))


def diversity_loss(probs):
    """SMRAM diversity loss (docs/methods.md §2): probs P (B, S, H·W), each row a softmax over
    positions; channel-wise max pooling g_k = max_s P_{s,k};
    L_div = 1 − (1/S)·Σ_k g_k, batch mean (S = 3: range [0, 2/3], 0 when the maps peak at
    S distinct places, 2/3 when they are identical one-hots)."""
    probs = upcast(probs)
    g = jnp.max(probs, axis=1)
    return jnp.mean(1.0 - jnp.sum(g, axis=-1) / probs.shape[1])


def contrastive_loss(features, labels, margin: float = 0.4):
    """TransFG contrastive loss (SwinFC Eq. 15): cos = normalised Z Zᵀ; mean over all B²
    pairs (diagonal included) of (1 − cos) for equal labels and max(cos − α, 0) otherwise, α = 0.4."""
    z = l2_normalize(upcast(features))
    cos = z @ z.T
    same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
    pos = (1.0 - cos) * same
    neg = jnp.maximum(cos - margin, 0.0) * (1.0 - same)
    return jnp.sum(pos + neg) / (features.shape[0] ** 2)
