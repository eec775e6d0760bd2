"""`<workdir>/model.json`: what a workdir's model needs to be used without its dataset — the
class names, the eval preprocessing, the method config and the dataset's identity (name,
version, split sizes, fingerprint). Written by the trainer at start; read by the tools."""

from __future__ import annotations

import json
import os

import jax

FILE = "model.json"


def card(config, info, method) -> dict:
    """The model card of a run of `config` on dataset `info` (a `DatasetInfo`)."""
    d = config.data
    return {
        "method": config.method.to_dict(),
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "preprocess": {
            "eval_resize": int(d.eval_resize),
            "eval_crop": int(d.eval_crop),
            "resize_mode": d.resize_mode,
            "mean": list(method.mean),
            "std": list(method.std),
            "input": "uint8 RGB, NHWC",
        },
        "dataset": {k: v for k, v in info.to_dict().items() if k != "class_names"},
    }


def write(workdir: str, config, info, method) -> None:
    """Write the card atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(card(config, info, method), f, indent=2)
    os.replace(path + ".tmp", path)


def read(workdir: str) -> dict | None:
    """The card of `workdir`, None for a run older than model cards."""
    path = os.path.join(workdir, FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path} is damaged ({e}); it is rewritten by the next training start in this workdir."
        ) from e
