"""Pretrained weights into a method's variables: where `config.init.pretrained` points, read
and converted, then merged strictly by name and shape.

Sources:
- a PyTorch file (.pth/.pt/.bin/.safetensors, converted on the fly) or a directory written by
  `python -m fgvc_jax.convert` (its classifier, if kept, is left out: the method's backbone is
  headless);
- `timm:<model name>` (e.g. `timm:swin_base_patch4_window12_384.ms_in22k_ft_in1k`): timm's own
  download and cache (`timm.create_model(name, pretrained=True)`: the Hugging Face hub cache
  under $HF_HOME, or torch.hub's for URL weights);
- `torchvision:<weights enum>` (e.g. `torchvision:ResNet50_Weights.IMAGENET1K_V1`):
  `weights.get_state_dict()`, torch.hub's download and cache ($TORCH_HOME/hub/checkpoints,
  the file named as the enum's URL).

`check_source(config)` reads and converts the source before anything else of a run happens,
so a missing, unreadable or misfitting source (or an unknown timm/torchvision name, or no
network and nothing cached) is one line before any dataset work and any workdir.
`merge_variables` is also how an earlier run's weights (`config.init.from_workdir`) load.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from fgvc_jax.convert import store
from fgvc_jax.convert.archs import convert_state_dict
from fgvc_jax.convert.source import ConversionError, numpy_state_dict, read_state_dict
from fgvc_jax.methods import registry

PUBLISHED = ("timm:", "torchvision:")
_CLASSIFIERS = ("fc", "classifier", "head")  # the top-level classifier of each family


class PretrainedError(ValueError):
    """`config.init.pretrained` cannot be used: one line naming it and why."""


def _one_line(e: Exception) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def check_source(config) -> None:
    """Read and convert `config.init.pretrained` for `config.method`'s backbone (nothing when
    it is empty); PretrainedError (FileNotFoundError for a missing file) otherwise."""
    source = config.init.get("pretrained") or ""
    if source:
        method = registry.create(config.method, 1)  # the class count does not matter here
        read_backbone(source, method.backbone_arch, method.backbone_kwargs)


def read_backbone(source: str, arch: str | None, backbone_kwargs: dict) -> dict:
    """Flax variables {'params', 'batch_stats'?} of the headless backbone `arch` (built with
    `backbone_kwargs`) from `source` (see the module docstring)."""
    what = f"config.init.pretrained={source!r}"
    path = os.path.expanduser(source)
    if not source.startswith(PUBLISHED) and os.path.isdir(path):
        return _converted_directory(what, path)
    if not source.startswith(PUBLISHED) and not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file or directory.")
    if arch is None:
        raise PretrainedError(f"{what} is set but the method has no pretrained backbone.")
    if source.startswith(PUBLISHED):
        sd = _published(what, *source.split(":", 1))
    else:
        try:
            sd = read_state_dict(path)
        except ConversionError as e:
            raise PretrainedError(f"{what}: {str(e).splitlines()[0]}") from None
        except Exception as e:  # a damaged or non-PyTorch file: torch's or safetensors' error
            raise PretrainedError(f"{what} is not a readable state dict ({_one_line(e)})") from e
    try:
        return convert_state_dict(arch, sd, 0, **backbone_kwargs)
    except ConversionError as e:
        problems = [s.strip() for s in str(e).splitlines() if s.startswith("  ")]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PretrainedError(
            f"{what} does not fit the {arch} backbone: {problems[0] if problems else e}{more}"
        ) from None


def _converted_directory(what: str, path: str) -> dict:
    try:
        if os.path.isdir(os.path.join(path, "variables")):
            tree = store.restore(path)
        else:  # an orbax tree of variables written by other means
            tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
    except Exception as e:
        raise PretrainedError(f"{what}: not a converted checkpoint ({_one_line(e)})") from e
    tree = dict(tree) if "params" in tree else {"params": tree}
    tree["params"] = {k: v for k, v in tree["params"].items() if k not in _CLASSIFIERS}
    return tree


def _published(what: str, library: str, name: str) -> dict[str, np.ndarray]:
    """The state dict of timm's or torchvision's published weights `name`, through their own
    download and cache."""
    try:
        from fgvc_jax.convert.torch_reference import timm, torchvision
    except ImportError as e:
        raise PretrainedError(f"{what} needs torch, torchvision and timm (make dev)") from e
    if library == "timm":
        if not (timm.is_model(name) and timm.models.is_model_pretrained(name)):
            near = timm.list_pretrained(f"{name.split('.')[0]}*")[:4]
            hint = f"; e.g. {', '.join(near)}" if near else "; timm.list_pretrained() lists them"
            raise PretrainedError(f"{what}: timm has no pretrained model {name!r}{hint}")
        try:
            sd = timm.create_model(name, pretrained=True).state_dict()
        except Exception as e:
            raise PretrainedError(
                f"{what}: timm could not download its weights and finds none in its cache "
                f"({_one_line(e)})"
            ) from e
    else:
        try:
            weights = torchvision.models.get_weight(name)
        except Exception:
            raise PretrainedError(
                f"{what}: torchvision has no weights {name!r} "
                "(a weights enum, e.g. ResNet50_Weights.IMAGENET1K_V1)"
            ) from None
        try:
            sd = weights.get_state_dict(progress=False)
        except Exception as e:
            import torch

            cache = os.path.join(torch.hub.get_dir(), "checkpoints")
            raise PretrainedError(
                f"{what}: torchvision could not download {weights.url} and {cache} has no "
                f"{os.path.basename(weights.url)} ({_one_line(e)})"
            ) from e
    return numpy_state_dict(sd)


def load_pretrained(
    variables: dict,
    source: str,
    *,
    arch: str | None,
    dont_load: str = "",
    backbone_kwargs: dict | None = None,
) -> dict:
    """`variables` with the backbone replaced by the pretrained weights `source` (strict:
    every backbone variable not matched by `dont_load` is filled)."""
    pretrained = read_backbone(source, arch, backbone_kwargs or {})
    merged = merge_backbone(jax.device_get(variables), pretrained, dont_load=dont_load)
    logging.info("Loaded the %s backbone from %s", arch, source)
    return merged


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
