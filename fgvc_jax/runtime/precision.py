"""The one upcast rule: softmaxes, normalisations, losses and statistics are computed in at
least float32 — float32 under bfloat16 or float32 compute, float64 when the compute dtype is
float64 (the float64 comparisons with the PyTorch twins, `fgvc_jax.reference.parity`, where a
hard-coded float32 would round every such step to 6e-8 and hide the comparison under it)."""

import jax.numpy as jnp


def accumulation_dtype(dtype):
    """`dtype` promoted to at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def upcast(x):
    """`x` in its own dtype promoted to at least float32."""
    return x.astype(accumulation_dtype(x.dtype))
