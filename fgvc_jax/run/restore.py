"""Variables (params and batch_stats, no optimizer state) restored from a workdir's
checkpoints: for the tools, `--mode eval`, the final test of the best checkpoint and
`config.init.from_workdir`. The trainer restores the whole train state
(`run.checkpoints.Checkpoints.restore`)."""

from __future__ import annotations

import ml_collections
from absl import logging

from fgvc_jax.recipe import ema_decay
from fgvc_jax.recipe.train_state import with_sharding
from fgvc_jax.run import checkpoints as ckpt_lib
from fgvc_jax.runtime import parallel


def restore_variables(
    checkpoint_dir: str, shapes: dict, mesh, ema: bool = False, method: str | None = None
) -> dict:
    """{'params', ['batch_stats']} of the train-state checkpoint in `checkpoint_dir` (one
    step's folder), replicated over `mesh`; with `ema`, the EMA weights as 'params'. The
    optimizer state is not read."""
    rep = parallel.replicated(mesh)
    target = {k: with_sharding(shapes[k], rep) for k in ("params", "batch_stats") if shapes.get(k)}
    if ema:
        target["ema_params"] = target.pop("params")
    # issue 16: shapes checked against the checkpoint's (`method` named), digest verified
    restored = ckpt_lib.read_variables(checkpoint_dir, target, method)
    if ema:
        restored["params"] = restored.pop("ema_params")
    return restored


def restore_workdir_variables(
    workdir: str, config: ml_collections.ConfigDict, shapes: dict, mesh, which: str = "best"
) -> tuple[dict, int] | None:
    """(variables, step) of the `which` checkpoint of `workdir` ('best' falls back to
    'latest'), without the optimizer state; None when the workdir has no checkpoint."""
    ckpts = ckpt_lib.Checkpoints(
        workdir, keep=config.train.keep, best_metric=config.train.best_metric
    )
    try:
        found = ckpts.candidates(which)
    finally:
        ckpts.close()
    ema = ema_decay(config) > 0
    damaged = None
    for directory, step in found:  # issue 16: a damaged checkpoint is skipped, not moved
        try:
            return restore_variables(
                directory, shapes, mesh, ema=ema, method=config.method.name
            ), step
        except ckpt_lib.Damaged as e:
            damaged = e
            logging.warning("%s: trying the previous checkpoint", e)
    if damaged is not None:
        raise damaged
    return None
