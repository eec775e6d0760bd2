"""A trained model of a workdir, for the tools (evaluate, predict, explain, export): its
config, method, class names (from `<workdir>/model.json`: no dataset needed) and restored
variables.

The config comes from the caller (`--config`, the one the run was trained with) or, when the
trainer wrote it, from `<workdir>/config.json`. The checkpoint is the workdir's best one (or
the latest, `checkpoint='latest'`), restored with the same train-state layout the trainer
saves.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from fgvc_jax import data
from fgvc_jax.data import preprocess
from fgvc_jax.recipe import Recipe
from fgvc_jax.run import model_card, restore
from fgvc_jax.run import workdir as workdir_lib
from fgvc_jax.runtime import parallel

CONFIG_FILE = "config.json"


class ToolError(Exception):
    """A user mistake (missing workdir, checkpoint, config or image): one clear message."""


@dataclasses.dataclass
class Trained:
    config: ml_collections.ConfigDict
    method: Any  # fgvc_jax.methods.Method
    variables: dict  # {'params': ..., ['batch_stats': ...]}
    class_names: list[str]
    step: int
    workdir: str

    @property
    def image_size(self) -> int:
        return int(self.config.data.eval_crop)

    def normalize(self, images) -> jax.Array:
        """uint8 NHWC → the network's input (normalised, compute dtype)."""
        return preprocess.normalize(images, self.method.mean, self.method.std, self.method.dtype)


def read_config(
    workdir: str, config: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """`config` if given, else `<workdir>/config.json`, else a ToolError saying what to pass."""
    if config is not None:
        return config
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ToolError(
            f"no {CONFIG_FILE} in workdir {os.path.abspath(workdir)}: pass the "
            "config the run was trained with, e.g. --config "
            "configs/<method>.py:<dataset> (with the same --config.* overrides)."
        )
    try:  # the latest start's config (config_history/), one line if corrupt (issue 16)
        return ml_collections.ConfigDict(workdir_lib.run_config(workdir))
    except workdir_lib.WorkdirError as e:
        raise ToolError(str(e)) from None


def check_workdir(workdir: str | None) -> str:
    if not workdir:
        raise ToolError("--workdir is required (the training run's folder).")
    if not os.path.isdir(workdir):
        raise ToolError(f"workdir {os.path.abspath(workdir)} does not exist.")
    if not any(os.path.isdir(os.path.join(workdir, d)) for d in ("best", "checkpoints")):
        raise ToolError(
            f"no checkpoint in {os.path.abspath(workdir)} (expected best/ or "
            "checkpoints/): train first with python -m fgvc_jax.main --mode train."
        )
    return workdir


def class_names_of(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The class names the model was trained with, from `<workdir>/model.json` (no dataset
    needed); a run older than model cards prepares its dataset to find them."""
    saved = model_card.read(workdir)
    if saved is not None:
        return list(saved["class_names"])
    return list(data.prepare(config.data).class_names)


def load(
    workdir: str, config: ml_collections.ConfigDict | None = None, checkpoint: str = "best"
) -> Trained:
    """Restore the variables of the `checkpoint` ('best', falling back to 'latest'; or
    'latest') of `workdir` (no optimizer state is read), in the layout of the run's recipe."""
    workdir = check_workdir(workdir)
    config = read_config(workdir, config)
    names = class_names_of(workdir, config)
    recipe = Recipe(config, len(names))
    restored = restore.restore_workdir_variables(
        workdir, config, recipe.variable_shapes, parallel.make_mesh(), checkpoint
    )
    if restored is None:
        raise ToolError(
            f"no checkpoint in {os.path.abspath(workdir)} (best/ and checkpoints/ "
            "are empty): train first with python -m fgvc_jax.main --mode train."
        )
    variables, step = restored
    return Trained(
        config=config,
        method=recipe.method,
        variables=variables,
        class_names=names,
        step=int(step),
        workdir=workdir,
    )
