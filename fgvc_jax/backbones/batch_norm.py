"""BatchNorm with PyTorch's semantics (docs/methods.md §0).

Flax's nn.BatchNorm updates the running variance with the biased batch variance; PyTorch uses
the unbiased one (n / (n - 1)). Training from torchvision weights then drifts from the
reference, so this module follows torch exactly: normalise with the biased batch variance,
update `var` with the unbiased one, momentum 0.9 here == 0.1 in torch, eps 1e-5.

Statistics are computed in at least float32 (`fgvc_jax.runtime.precision.upcast`): float32 under
bfloat16 compute, float64 under float64. Under `jax.jit` with the batch
sharded over a mesh, the means are over the global batch (GSPMD inserts the all-reduce).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.runtime.precision import accumulation_dtype, upcast


class BatchNorm(nn.Module):
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = upcast(x)
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if not self.is_initializing():
                n = xf.size // c
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var * (
                    n / max(n - 1, 1)
                )
        else:
            mean, var = ra_mean.value, ra_var.value
        acc = accumulation_dtype(x.dtype)
        mul = scale.astype(acc) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        add = bias.astype(acc) - mean * mul
        return (x * mul.astype(self.dtype) + add.astype(self.dtype)).astype(self.dtype)
