"""A method, its variables and its train state: created fresh, or restored from a workdir.

The one place that goes config → `Method` → variable shapes → optimizer → train state (as
scenic's `train_utils.initialize_model` / `restore_checkpoint`). The trainer restores the
whole train state; the tools (`restore_variables`) restore params and batch_stats only,
without building an optimizer.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgvc_jax.runtime import parallel

#: The compute dtypes (`config.train.dtype`); parameters always stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds; the data position and RNG follow from `step`."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any = flax.struct.field(default_factory=dict)  # {} when EMA is off

    def variables(self, ema: bool = False) -> dict:
        """{'params', ['batch_stats']}; with `ema`, the EMA of the parameters as 'params'."""
        v = {"params": self.ema_params if ema else self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def compute_dtype(config: ml_collections.ConfigDict):
    """The run's compute dtype, decided once from `config.train.dtype`."""
    name = config.train.dtype
    if name not in DTYPES:
        raise ValueError(f"config.train.dtype={name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def create_method(config: ml_collections.ConfigDict, num_classes: int):
    """The `Method` of `config.method`, computing in `config.train.dtype`."""
    from fgvc_jax.methods import registry

    return registry.create(config.method, num_classes, compute_dtype(config))


def _init(method, image_shape: tuple[int, ...], seed: int, dtype):
    """(scores, variables) of a fresh network (in training mode, so that training-only
    modules create their parameters)."""
    x = jnp.zeros((2,) + tuple(image_shape), dtype)
    key = jax.random.key(seed)
    rngs = {"params": jax.random.fold_in(key, 1), "dropout": jax.random.fold_in(key, 2)}
    outputs, variables = method.network.init_with_output(rngs, x, train=True)
    return (
        method.scores(outputs),
        {k: v for k, v in variables.items() if k in ("params", "batch_stats")},
    )


def init_variables(method, image_shape: tuple[int, ...], seed: int, dtype) -> dict:
    """Fresh variables {'params', ['batch_stats']} of the method's network."""
    return jax.jit(lambda: _init(method, image_shape, seed, dtype)[1])()


def variable_shapes(method, image_shape: tuple[int, ...], seed: int, dtype) -> dict:
    """Shapes and dtypes of `init_variables` (nothing computed)."""
    return jax.eval_shape(lambda: _init(method, image_shape, seed, dtype))[1]


def score_names(method, image_shape: tuple[int, ...], seed: int, dtype) -> list[str]:
    """The names of `method.scores` (each head and 'combined'), nothing computed."""
    return sorted(jax.eval_shape(lambda: _init(method, image_shape, seed, dtype))[0])


def state_from_variables(
    tx: optax.GradientTransformation, variables: dict, ema: bool = False
) -> TrainState:
    """Train state at step 0 around `variables` ({'params', ['batch_stats']}); with `ema`,
    the EMA of the parameters starts at the parameters."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema else {},
    )


def create_train_state(
    tx: optax.GradientTransformation, variables: dict, mesh, ema: bool = False
) -> TrainState:
    """Train state at step 0, replicated over the mesh."""
    return jax.jit(
        functools.partial(state_from_variables, tx, ema=ema),
        out_shardings=parallel.replicated(mesh),
    )(variables)


def abstract_state(
    tx: optax.GradientTransformation, shapes: dict, mesh, ema: bool = False
) -> TrainState:
    """Shapes, dtypes and shardings of the train state around variables of `shapes`
    (`variable_shapes(...)`), replicated: what checkpoints are restored into."""
    fn = functools.partial(state_from_variables, tx, ema=ema)
    return _with_sharding(jax.eval_shape(fn, shapes), parallel.replicated(mesh))


def _with_sharding(tree, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def restore_workdir_variables(
    workdir: str, config: ml_collections.ConfigDict, shapes: dict, mesh, which: str = "best"
) -> tuple[dict, int] | None:
    """(variables, step) of the `which` checkpoint of `workdir` ('best' falls back to
    'latest'), without the optimizer state; None when the workdir has no checkpoint."""
    from absl import logging

    from fgvc_jax.run import checkpoints as ckpt_lib

    ckpts = ckpt_lib.Checkpoints(
        workdir, keep=config.train.keep, best_metric=config.train.best_metric
    )
    try:
        found = ckpts.candidates(which)
    finally:
        ckpts.close()
    ema = config.train.get("ema_decay", 0.0) > 0
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


def restore_variables(
    checkpoint_dir: str, shapes: dict, mesh, ema: bool = False, method: str | None = None
) -> dict:
    """{'params', ['batch_stats']} of the train-state checkpoint in `checkpoint_dir` (one
    step's folder), replicated over `mesh`; with `ema`, the EMA weights as 'params'. The
    optimizer state is not read."""
    rep = parallel.replicated(mesh)
    target = {k: _with_sharding(shapes[k], rep) for k in ("params", "batch_stats") if shapes.get(k)}
    if ema:
        target["ema_params"] = target.pop("params")
    from fgvc_jax.run import checkpoints as ckpt_lib

    # issue 16: shapes checked against the checkpoint's (`method` named), digest verified
    restored = ckpt_lib.read_variables(checkpoint_dir, target, method)
    if ema:
        restored["params"] = restored.pop("ema_params")
    return restored


def run_variables(
    workdir: str, mesh, which: str = "best"
) -> tuple[dict, ml_collections.ConfigDict]:
    """(variables, config) of an earlier run of this library in `workdir` (its best, else
    latest, checkpoint; the EMA weights when it kept them), built from its config and
    model.json alone."""
    from fgvc_jax.run import model_card
    from fgvc_jax.run import workdir as workdir_lib

    card = model_card.read(workdir) if os.path.isdir(workdir) else None
    saved = workdir_lib.run_config(workdir) if card is not None else None
    if saved is None:
        raise ValueError(
            f"config.init.from_workdir={workdir!r} is not a run of this library "
            "(expected config.json and model.json in it)."
        )
    config = ml_collections.ConfigDict(saved)
    method = create_method(config, card["num_classes"])
    shape = (int(config.data.crop),) * 2 + (3,)
    restored = restore_workdir_variables(
        workdir, config, variable_shapes(method, shape, config.seed, method.dtype), mesh, which
    )
    if restored is None:
        raise ValueError(f"config.init.from_workdir={workdir!r} has no checkpoint.")
    return restored[0], config
