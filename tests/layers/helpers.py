"""Shared helpers for the JAX-vs-PyTorch block tests."""

import jax
import numpy as np

from fgvc_jax.reference import weights
from fgvc_jax.reference.torch_import import torch


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def to_nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def load(block, params, batch_stats=None):
    """`block` (a `fgvc_jax.reference.blocks` module) with its flax layer's variables."""
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    weights.jax_to_torch(variables, block)
    return block


def assert_close(actual, expected, rel=1e-5):
    """max |actual − expected| ≤ rel · max |expected| (the 1e-5 relative rule)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.max(np.abs(actual - expected))
    scale = np.max(np.abs(expected))
    assert err <= rel * scale, f"max abs diff {err:.3g} > {rel} x {scale:.3g}"


def randomize(tree, seed=0, scale=0.5):
    """Replace every leaf with random values (variances positive), so that zero-initialised
    parameters (γ, BN shift, running stats) are exercised too."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        v = rng.normal(0.0, scale, np.shape(leaf)).astype(np.float32)
        if "var" in jax.tree_util.keystr(path):
            v = np.abs(v) + 0.5
        out.append(v)
    return jax.tree_util.tree_unflatten(treedef, out)
