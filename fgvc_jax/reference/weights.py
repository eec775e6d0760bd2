"""The weight map between a method's flax variables ({'params', 'batch_stats'}) and its twin's
state dict, both directions, strict: every tensor on each side has exactly one partner of the
right shape, or the map raises with all problems listed.

Names: a state-dict key maps as `fgvc_jax.convert`'s backbone converter maps torchvision /
timm keys (`a.b.weight` → params a/b/kernel (conv, linear) or scale (norms); running_mean /
running_var → batch_stats mean / var), the twin's backbone under `backbone/`. Layouts: a
PyTorch (O, I, *k) kernel ↔ flax (*k, I, O) with size-1 spatial axes dropped where the flax
side has none (a 1x1 conv written as Dense, a kernel-1 Conv1d); a Linear (O, I) ↔ (I, O); for
the keys of `twin.flatten_inputs` the input axis is also reordered from C·H·W (a flatten of
an NCHW map) to H·W·C (the NHWC flatten)."""

from __future__ import annotations

import flax.traverse_util
import numpy as np

from fgvc_jax.convert.archs import densenet_key
from fgvc_jax.convert.mapping import flax_path
from fgvc_jax.convert.source import ConversionError

#: State-dict entries with no flax counterpart (recomputed buffers, counters).
DROPPED = ("num_batches_tracked", "relative_position_index", "attn_mask")


def jax_path(key: str, ndim: int) -> tuple[str, ...]:
    """State-dict key → (collection, *module path, name) of the flax variable."""
    backbone = key.startswith("backbone.")
    if backbone:
        key = densenet_key(key[len("backbone.") :])
    path, _ = flax_path(key, np.zeros((1,) * min(ndim, 4) if ndim < 3 else (1,) * 4))
    return (path[0], "backbone", *path[1:]) if backbone else path


def to_jax(value: np.ndarray, shape, chw=None, weight: bool = True) -> np.ndarray:
    """A PyTorch tensor in the layout of the flax variable of `shape` (`weight`: a module's
    `weight`; other tensors, e.g. a relative position bias table, keep their layout)."""
    if not weight:
        return value.reshape(shape)
    if chw is not None:  # (O, C·H·W) → (H·W·C, O)
        c, h, w = chw
        return value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(shape)
    if value.ndim >= 3:
        value = value.transpose(*range(2, value.ndim), 1, 0)
    elif value.ndim == 2:
        value = value.T
    return value.reshape(shape)


def to_torch(value: np.ndarray, shape, chw=None, weight: bool = True) -> np.ndarray:
    """A flax variable in the layout of the PyTorch tensor of `shape` (inverse of to_jax)."""
    shape = tuple(shape)
    if not weight:
        return value.reshape(shape)
    if chw is not None:
        c, h, w = chw
        return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(shape)
    if len(shape) >= 3:
        n = len(shape)
        value = value.reshape(*shape[2:], shape[1], shape[0])
        return value.transpose(n - 1, n - 2, *range(n - 2))
    if len(shape) == 2:
        return value.reshape(shape[1], shape[0]).T
    return value.reshape(shape)


def pairs(twin, flat_jax: dict) -> dict[str, tuple[str, ...]]:
    """{state-dict key: flax path}, checked both ways (names and element counts)."""
    out, unknown, mismatched = {}, [], []
    for key, tensor in twin.state_dict().items():
        if key.endswith(DROPPED):
            continue
        path = jax_path(key, tensor.ndim)
        if path not in flat_jax:
            unknown.append(f"{key} (→ {'/'.join(path)})")
        elif int(np.prod(flat_jax[path].shape)) != tensor.numel():
            mismatched.append(
                f"{key} {tuple(tensor.shape)} vs {'/'.join(path)} {tuple(flat_jax[path].shape)}"
            )
        else:
            out[key] = path
    missing = sorted(set(flat_jax) - set(out.values()))
    problems = []
    if mismatched:
        problems.append("shape mismatches:\n  " + "\n  ".join(mismatched))
    if unknown:
        problems.append("twin tensors with no flax variable:\n  " + "\n  ".join(unknown))
    if missing:
        problems.append(
            "flax variables with no twin tensor:\n  " + "\n  ".join("/".join(p) for p in missing)
        )
    if problems:
        raise ConversionError(
            f"{type(twin).__name__}: weight map does not fit:\n" + "\n".join(problems)
        )
    return out


def _flat(variables) -> dict:
    return flax.traverse_util.flatten_dict(
        {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    )


def jax_to_torch(variables: dict, twin) -> None:
    """Load flax `variables` into `twin` (in place): a method's twin, or a block of
    `reference.blocks` and the variables of its flax layer."""
    import torch

    flat = _flat(variables)
    sd = twin.state_dict()
    new = {}
    for key, path in pairs(twin, flat).items():
        value = to_torch(
            np.asarray(flat[path], np.float32),
            sd[key].shape,
            getattr(twin, "flatten_inputs", {}).get(key),
            key.endswith(".weight"),
        )
        new[key] = torch.from_numpy(np.array(value, np.float32))
    twin.load_state_dict(new, strict=False)


def torch_to_jax(twin, like: dict) -> dict:
    """The twin's weights as flax variables shaped like `like` (e.g. `jax.eval_shape` of the
    method's init)."""
    flat = _flat(like)
    sd = twin.state_dict()
    out = {
        path: to_jax(
            sd[key].detach().cpu().numpy(),
            flat[path].shape,
            getattr(twin, "flatten_inputs", {}).get(key),
            key.endswith(".weight"),
        )
        for key, path in pairs(twin, flat).items()
    }
    return flax.traverse_util.unflatten_dict(out)
