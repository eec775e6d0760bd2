"""Putting pretrained weights into a method's variables: a converted PyTorch backbone, or the
weights of an earlier run of this library — strictly, by name and shape."""

from __future__ import annotations

import re

import numpy as np
from flax import traverse_util


def merge_variables(
    variables: dict,
    source: dict,
    prefix: str = "",
    dont_load: str = "",
    source_name: str = "converted",
) -> dict:
    """`variables` with `variables[col][prefix]` (the whole `variables[col]` when `prefix`
    is '') replaced by `source[col]` for every collection.

    Strict: the two trees must have exactly the same names and shapes (every target filled,
    every source used); mismatches are listed in one ValueError naming the source ('converted'
    weights, or e.g. 'run runs/a'). Paths
    matching the `dont_load` regex (searched in '<prefix>/...', as the param-group regexes)
    are skipped on both sides and keep their initialisation. Arrays are cast to the target
    dtypes."""
    skip = re.compile(dont_load).search if dont_load else (lambda name: False)
    path = (lambda k: f"{prefix}/{k}") if prefix else (lambda k: k)
    sub = (lambda tree: tree[prefix]) if prefix else (lambda tree: tree)
    has = (lambda col: prefix in variables[col]) if prefix else (lambda col: True)
    what = f"{source_name} weights"
    errors, out = [], {}
    cols = set(source) | {c for c in variables if has(c)}
    for col in sorted(cols):
        src = traverse_util.flatten_dict(dict(source.get(col, {})), sep="/")
        src = {k: v for k, v in src.items() if not skip(path(k))}
        if col not in variables or not has(col):
            if src:
                errors.append(
                    f"{col}: the method has no {prefix or 'variables'!r} in this collection"
                )
            continue
        dst = traverse_util.flatten_dict(dict(sub(variables[col])), sep="/")
        wanted = {k for k in dst if not skip(path(k))}
        for k in sorted(wanted - set(src)):
            errors.append(f"{col}/{path(k)}: missing from the {what}")
        for k in sorted(set(src) - set(dst)):
            errors.append(
                f"{col}/{path(k)}: not in the method's "
                f"{'backbone' if prefix == 'backbone' else 'variables'}"
            )
        for k in sorted(set(src) & set(dst)):
            if tuple(np.shape(src[k])) != tuple(np.shape(dst[k])):
                errors.append(
                    f"{col}/{path(k)}: {source_name} shape {tuple(np.shape(src[k]))}"
                    f", method shape {tuple(np.shape(dst[k]))}"
                )
        if not errors:
            merged = {
                k: np.asarray(src[k] if k in wanted else dst[k], dtype=dst[k].dtype) for k in dst
            }
            out[col] = traverse_util.unflatten_dict(merged, sep="/")
    if errors:
        raise ValueError(
            f"the {what} do not fit the method (config.init.dont_load skips "
            "parameters on purpose):\n  "
            + "\n  ".join(errors[:30])
            + (f"\n  ... and {len(errors) - 30} more" if len(errors) > 30 else "")
        )
    result = {col: dict(tree) for col, tree in variables.items()}
    for col, tree in out.items():
        if prefix:
            result[col][prefix] = tree
        else:
            result[col] = tree
    return result


def merge_backbone(
    variables: dict, backbone_variables: dict, prefix: str = "backbone", dont_load: str = ""
) -> dict:
    """Replace `variables[col][prefix]` by the converted backbone's `backbone_variables[col]`
    (strict, see `merge_variables`)."""
    return merge_variables(variables, backbone_variables, prefix, dont_load)
