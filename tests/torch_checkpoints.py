"""Random PyTorch reference models saved to files, as a user's downloaded weights would be."""

import numpy as np

from fgvc_jax.convert import torch_reference
from fgvc_jax.reference.torch_import import torch


def randomize_batch_norm(model, seed: int = 0):
    """Non-trivial BN affine params and running stats, so that eval-mode BN is not identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def saved_reference(arch: str, path, seed: int = 0, **kwargs):
    """Build the PyTorch model with random weights, save its state dict to `path` (.pth)."""
    torch.manual_seed(seed)
    model = randomize_batch_norm(torch_reference.torch_model(arch, **kwargs), seed).eval()
    torch.save(model.state_dict(), path)
    return model


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def flat_numpy(tree, prefix: str = "") -> dict:
    """{'a/b/c': numpy array} of a nested dict of arrays (e.g. batch_stats)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat_numpy(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out
