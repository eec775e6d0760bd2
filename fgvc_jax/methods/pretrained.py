"""Putting a converted PyTorch backbone into a method's variables."""
from __future__ import annotations

import re

import numpy as np
from flax import traverse_util


def merge_backbone(variables: dict, backbone_variables: dict, prefix: str = "backbone",
                   dont_load: str = "") -> dict:
    """Replace `variables[col][prefix]` by `backbone_variables[col]` for every collection.

    Strict: the two backbone trees must have exactly the same names and shapes (every target
    filled, every source used); mismatches are listed in one ValueError. Paths matching the
    `dont_load` regex (searched in '<prefix>/...', as the param-group regexes) are skipped on
    both sides and keep their initialisation, like the new layers outside `prefix`. Arrays are
    cast to the target dtypes."""
    skip = re.compile(dont_load).search if dont_load else (lambda name: False)
    errors, out = [], {}
    cols = set(backbone_variables) | {c for c in variables if prefix in variables[c]}
    for col in sorted(cols):
        src = traverse_util.flatten_dict(dict(backbone_variables.get(col, {})), sep="/")
        src = {k: v for k, v in src.items() if not skip(f"{prefix}/{k}")}
        if col not in variables or prefix not in variables[col]:
            if src:
                errors.append(f"{col}: the method has no {prefix!r} in this collection")
            continue
        dst = traverse_util.flatten_dict(dict(variables[col][prefix]), sep="/")
        wanted = {k for k in dst if not skip(f"{prefix}/{k}")}
        for k in sorted(wanted - set(src)):
            errors.append(f"{col}/{prefix}/{k}: missing from the converted weights")
        for k in sorted(set(src) - set(dst)):
            errors.append(f"{col}/{prefix}/{k}: not in the method's backbone")
        for k in sorted(set(src) & set(dst)):
            if tuple(np.shape(src[k])) != tuple(np.shape(dst[k])):
                errors.append(f"{col}/{prefix}/{k}: converted shape {tuple(np.shape(src[k]))}, "
                              f"method shape {tuple(np.shape(dst[k]))}")
        if not errors:
            merged = {k: np.asarray(src[k] if k in wanted else dst[k], dtype=dst[k].dtype) for k in dst}
            out[col] = traverse_util.unflatten_dict(merged, sep="/")
    if errors:
        raise ValueError("converted backbone weights do not fit the method (config.init.dont_load "
                         "skips parameters on purpose):\n  " + "\n  ".join(errors[:30])
                         + (f"\n  ... and {len(errors) - 30} more" if len(errors) > 30 else ""))
    result = {col: dict(tree) for col, tree in variables.items()}
    for col, tree in out.items():
        result[col][prefix] = tree
    return result
