"""The train state and a network's fresh variables: what a checkpoint holds, its layout
(shapes, dtypes, shardings) and step 0. Restoring one from a workdir is `fgvc_jax.run.restore`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fgvc_jax.runtime import parallel


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
    return with_sharding(jax.eval_shape(fn, shapes), parallel.replicated(mesh))


def with_sharding(tree, sharding):
    """`tree` of shapes as ShapeDtypeStructs placed with `sharding`."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)
