"""Converted variables on disk: an orbax checkpoint `DIR/variables` + `DIR/convert.json`."""

import json
import os

import orbax.checkpoint as ocp


def save(out_dir: str, variables: dict, meta: dict) -> str:
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(out_dir, "variables"), variables, force=True)
    ckptr.wait_until_finished()
    with open(os.path.join(out_dir, "convert.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir


def restore(out_dir: str) -> dict:
    path = os.path.join(os.path.abspath(os.path.expanduser(out_dir)), "variables")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{out_dir!r} is not a converted checkpoint (no {path!r}); "
            "write one with `python -m fgvc_jax.convert --out DIR`"
        )
    return ocp.StandardCheckpointer().restore(path)
