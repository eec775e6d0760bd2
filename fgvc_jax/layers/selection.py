"""FSM: the feature selection module of SwinFC (docs/methods.md §4 "FSM"; loss only)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def select_tokens(attentions: Sequence[jax.Array], tokens: jax.Array):
    """FSM (docs/methods.md §4): for each block's post-softmax attention A (B, heads, N, N) and each
    head, a_j = mean_i A(i, j) and the argmax column j is selected (duplicates allowed,
    stop_gradient); those tokens are gathered from `tokens` (B, N, C) — the final normed
    stage-4 output — and averaged.

    Returns (Z̃ (B, C), indices (B, blocks·heads))."""
    cols = [jnp.argmax(jnp.mean(a, axis=2), axis=-1) for a in attentions]  # each (B, heads)
    idx = jax.lax.stop_gradient(jnp.concatenate(cols, axis=-1))
    picked = jnp.take_along_axis(tokens, idx[:, :, None], axis=1)  # (B, K, C)
    return jnp.mean(picked, axis=1), idx
