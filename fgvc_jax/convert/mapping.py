"""Strict mapping of a torch state dict onto the variables of a flax model.

Every source tensor is used or explicitly dropped, every target variable is filled, and shapes
are checked by name: all problems are collected and raised as one ConversionError.
"""

import re
from collections.abc import Callable

import flax.traverse_util
import jax
import numpy as np

from fgvc_jax.convert.rel_pos_bias import resize_rel_pos_bias_table
from fgvc_jax.convert.source import ConversionError

# torch module-path pieces whose flax module is named with '_' (flax has no list containers).
_JOIN = re.compile(r"\b(layers|blocks|downsample)\.(\d+)\b")
_BUFFERS = {"running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def flax_path(key: str, value: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """torch key + tensor → (collection, *module path, name) and the value in flax layout."""
    key = _JOIN.sub(r"\1_\2", key).replace("mlp.fc", "mlp_fc")
    *mod, leaf = key.split(".")
    if leaf in _BUFFERS:
        col, name = _BUFFERS[leaf]
        return (col, *mod, name), value
    if leaf == "weight":
        if value.ndim == 4:  # conv (O, I, kh, kw) → (kh, kw, I, O)
            return ("params", *mod, "kernel"), value.transpose(2, 3, 1, 0)
        if value.ndim == 2:  # linear (O, I) → (I, O)
            return ("params", *mod, "kernel"), value.T
        return ("params", *mod, "scale"), value  # norm
    return ("params", *mod, leaf), value


def convert(
    state_dict: dict[str, np.ndarray],
    target_shapes: dict,
    *,
    drop: Callable[[str], bool],
    rename: Callable[[str], str] = lambda k: k,
    windows: dict[tuple[str, ...], tuple[int, int]] | None = None,
) -> dict:
    """Fill `target_shapes` (a pytree of ShapeDtypeStruct, e.g. from jax.eval_shape(model.init))
    from `state_dict`. `drop(key)` marks source tensors dropped on purpose; `rename` maps
    release-specific keys to the canonical ones; `windows` gives, per relative-position bias
    table path, the target window (the table is resized when it differs)."""
    target = flax.traverse_util.flatten_dict(jax.tree_util.tree_map(lambda s: s, target_shapes))
    filled, unknown, mismatched = {}, [], []
    for key, value in state_dict.items():
        if drop(key):
            continue
        path, value = flax_path(rename(key), value)
        if path not in target:
            unknown.append(f"{key} (→ {'/'.join(path)})")
            continue
        want = tuple(target[path].shape)
        if path[-1] == "relative_position_bias_table" and value.shape != want and windows:
            value = resize_rel_pos_bias_table(value, windows[path])
        if value.shape != want:
            mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)}, model {'/'.join(path)} {want}"
            )
            continue
        filled[path] = np.asarray(value, dtype=target[path].dtype)
    missing = ["/".join(p) for p in target if p not in filled]
    problems = []
    if mismatched:
        problems.append("shape mismatches:\n  " + "\n  ".join(mismatched))
    if unknown:
        problems.append("checkpoint tensors the model has no place for:\n  " + "\n  ".join(unknown))
    if missing:
        problems.append("model variables the checkpoint does not fill:\n  " + "\n  ".join(missing))
    if problems:
        raise ConversionError("checkpoint does not fit the model:\n" + "\n".join(problems))
    return flax.traverse_util.unflatten_dict(filled)
