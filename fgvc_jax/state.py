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
import orbax.checkpoint as ocp

from fgvc_jax import parallel

#: The compute dtypes (`config.train.dtype`); parameters always stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds; the data position and RNG follow from `step`."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict:
        v = {"params": self.params}
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


def init_variables(method, image_shape: tuple[int, ...], seed: int, dtype) -> dict:
    """Fresh variables of the method's network (in training mode, so that training-only
    modules create their parameters)."""
    def init():
        x = jnp.zeros((2,) + tuple(image_shape), dtype)
        key = jax.random.key(seed)
        rngs = {"params": jax.random.fold_in(key, 1), "dropout": jax.random.fold_in(key, 2)}
        variables = method.network.init(rngs, x, train=True)
        return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}

    return jax.jit(init)()


def variable_shapes(method, image_shape: tuple[int, ...], seed: int, dtype) -> dict:
    """Shapes and dtypes of `init_variables` (nothing computed)."""
    return jax.eval_shape(lambda: init_variables(method, image_shape, seed, dtype))


def state_from_variables(tx: optax.GradientTransformation, variables: dict) -> TrainState:
    """Train state at step 0 around `variables` ({'params', ['batch_stats']})."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(variables["params"]))


def create_train_state(tx: optax.GradientTransformation, variables: dict, mesh) -> TrainState:
    """Train state at step 0, replicated over the mesh."""
    return jax.jit(functools.partial(state_from_variables, tx),
                   out_shardings=parallel.replicated(mesh))(variables)


def abstract_state(tx: optax.GradientTransformation, shapes: dict, mesh) -> TrainState:
    """Shapes, dtypes and shardings of the train state around variables of `shapes`
    (`variable_shapes(...)`), replicated: what checkpoints are restored into."""
    return _with_sharding(jax.eval_shape(functools.partial(state_from_variables, tx), shapes),
                          parallel.replicated(mesh))


def _with_sharding(tree, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        tree)


def restore_workdir_variables(workdir: str, config: ml_collections.ConfigDict, shapes: dict,
                              mesh, which: str = "best") -> tuple[dict, int] | None:
    """(variables, step) of the `which` checkpoint of `workdir` ('best' falls back to
    'latest'), without the optimizer state; None when the workdir has no checkpoint."""
    from fgvc_jax import checkpoints as ckpt_lib

    ckpts = ckpt_lib.Checkpoints(workdir, keep=config.train.keep,
                                 best_metric=config.train.best_metric)
    try:
        found = ckpts.find(which)
    finally:
        ckpts.close()
    if found is None:
        return None
    directory, step = found
    return restore_variables(directory, shapes, mesh), step


def restore_variables(checkpoint_dir: str, shapes: dict, mesh) -> dict:
    """{'params', ['batch_stats']} of the train-state checkpoint in `checkpoint_dir` (one
    step's folder), replicated over `mesh`; the optimizer state is not read."""
    target = {k: _with_sharding(shapes[k], parallel.replicated(mesh))
              for k in ("params", "batch_stats") if shapes.get(k)}
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
    path = os.path.join(os.path.abspath(checkpoint_dir), "default")
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True))
