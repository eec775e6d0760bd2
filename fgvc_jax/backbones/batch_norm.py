"""BatchNorm with PyTorch's semantics (docs/methods.md §0).

Flax's nn.BatchNorm updates the running variance with the biased batch variance; PyTorch uses
the unbiased one (n / (n - 1)). Training from torchvision weights then drifts from the
reference, so this module follows torch exactly: normalise with the biased batch variance,
update `var` with the unbiased one, momentum 0.9 here == 0.1 in torch, eps 1e-5.

Statistics are computed in at least float32 (`fgvc_jax.runtime.precision.upcast`): float32 under
bfloat16 compute, float64 under float64. Under `jax.jit` with the batch
sharded over a mesh, the means are over the global batch (GSPMD inserts the all-reduce),
except within `per_device(n)` (`train.batch_norm='per_device'`): PyTorch DDP's per-GPU
BatchNorm, see `per_device`.
"""

import contextlib
import contextvars
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.runtime.precision import accumulation_dtype, upcast

_GROUPS = contextvars.ContextVar("batch_norm_groups", default=1)


@contextlib.contextmanager
def per_device(groups: int):
    """Within (while a step is traced), train-mode BatchNorm splits the batch into `groups`
    equal consecutive slices — with the batch sharded over the mesh's `groups` devices, each
    device's shard — and normalises each with its own batch statistics (no cross-device
    reduction: PyTorch DDP without SyncBatchNorm). The running statistics are updated with
    the first slice's, device 0's: DDP (`broadcast_buffers=True`, its default) broadcasts
    rank 0's buffers to every rank at each forward, so the running statistics that survive
    are rank 0's. `groups=1`: the global batch."""
    token = _GROUPS.set(int(groups))
    try:
        yield
    finally:
        _GROUPS.reset(token)


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
        groups = _GROUPS.get() if train and not self.is_initializing() else 1
        if x.shape[0] % groups:
            raise ValueError(f"BatchNorm: batch {x.shape[0]} does not split into {groups} devices")
        xg = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])  # (G, B/G, ..., C)
        if train:
            axes = tuple(range(1, xg.ndim - 1))
            xf = upcast(xg)
            mean = jnp.mean(xf, axes, keepdims=True)
            var = jnp.mean(jnp.square(xf - mean), axes, keepdims=True)
            if not self.is_initializing():
                n = xf[0].size // c  # device 0's statistics (DDP: rank 0's buffers survive)
                m0, v0 = mean.reshape(groups, c)[0], var.reshape(groups, c)[0]
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * m0
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * v0 * (
                    n / max(n - 1, 1)
                )
        else:
            mean, var = ra_mean.value, ra_var.value
        acc = accumulation_dtype(x.dtype)
        mul = scale.astype(acc) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        add = bias.astype(acc) - mean * mul
        y = xg * mul.astype(self.dtype) + add.astype(self.dtype)
        return y.reshape(x.shape).astype(self.dtype)
