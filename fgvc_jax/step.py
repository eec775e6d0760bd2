"""The jitted train and eval steps over the device mesh, and evaluation over an iterator.

One jitted step runs over a `Mesh(('data',))` of all devices of all processes: parameters
replicated, batch sharded, BatchNorm statistics over the global batch. The dropout key of
step s is `fold_in(key(seed), s)`, so a step is a pure function of (state, batch).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from fgvc_jax import optim, parallel
from fgvc_jax.data import preprocess
from fgvc_jax.state import TrainState


def sown_metrics(tree) -> dict[str, jax.Array]:
    """What modules sowed into the 'metrics' collection ({'metrics/<module path>/<name>':
    value}), e.g. CRAM's 'cram3/suppressed_channels' (each sown value replaces the last)."""
    flat = traverse_util.flatten_dict(dict(tree), sep="/")
    return {f"metrics/{k}": jnp.asarray(v, jnp.float32) for k, v in flat.items()}


def train_step(state: TrainState, batch: dict, *, method, tx, seed: int,
               accumulate: int = 1, split: Callable | None = None):
    """One optimizer update on a global batch; returns (new state, metrics of this step)."""
    network = method.network
    has_bs = bool(state.batch_stats)
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def grad_fn(params, batch_stats, mb, index):
        def loss_fn(params):
            variables = {"params": params}
            if has_bs:
                variables["batch_stats"] = batch_stats
            images = preprocess.normalize(mb["image"], method.mean, method.std, method.dtype)
            outputs, mutated = network.apply(
                variables, images, train=True,
                rngs={"dropout": jax.random.fold_in(rng, index)},
                mutable=["batch_stats", "metrics"] if has_bs else ["metrics"])
            loss, terms = method.loss(outputs, mb["label"])
            probs = method.predict(outputs)
            acc = jnp.mean((jnp.argmax(probs, -1) == mb["label"]).astype(jnp.float32))
            aux = {**{f"loss/{k}": jnp.asarray(v, jnp.float32) for k, v in terms.items()},
                   **sown_metrics(mutated.get("metrics", {})), "train_top1": acc}
            return loss.astype(jnp.float32), (aux, mutated.get("batch_stats", batch_stats))
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, aux), batch_stats, grads = optim.accumulate_gradients(
        grad_fn, state.params, state.batch_stats, batch, accumulate, split)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    metrics = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads)}
    metrics.update({f"lr/{g}": lr for g, lr in optim.learning_rates(opt_state).items()})
    return new_state, metrics


def make_train_step(method, tx, config: ml_collections.ConfigDict, mesh):
    """`train_step` jitted over `mesh`: state replicated (donated), batch sharded on 'data'."""
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    micro = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
    split = lambda tree: jax.lax.with_sharding_constraint(tree, micro)
    fn = functools.partial(train_step, method=method, tx=tx, seed=config.seed,
                           accumulate=config.optim.accumulate, split=split)
    return jax.jit(fn, in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=0)


def eval_step(variables: dict, batch: dict, *, method) -> dict:
    """Sums over the valid (mask) examples of top-1/top-5 hits of every score of
    `method.scores` (each head and the combined prediction)."""
    images = preprocess.normalize(batch["image"], method.mean, method.std, method.dtype)
    outputs = method.network.apply(variables, images, train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    sums = {"count": mask.sum()}
    for name, s in method.scores(outputs).items():
        _, top = jax.lax.top_k(s, min(5, s.shape[-1]))
        hit = top == labels[:, None]
        sums[f"top1/{name}"] = (hit[:, 0] * mask).sum()
        sums[f"top5/{name}"] = (hit.any(-1) * mask).sum()
    return sums


def make_eval_step(method, mesh):
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    return jax.jit(functools.partial(eval_step, method=method), in_shardings=(rep, dat),
                   out_shardings=rep)


def evaluate(eval_fn, variables: dict, batches: Iterator[dict], mesh) -> dict[str, float]:
    """Top-1/top-5 (percent) of every score over a finite iterator of padded batches."""
    total = None
    for batch in batches:
        sums = eval_fn(variables, parallel.host_to_global(
            {k: batch[k] for k in ("image", "label", "mask")}, mesh))
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the evaluation split is empty")
    total = jax.device_get(total)
    count = float(total.pop("count"))
    return {k: 100.0 * float(v) / count for k, v in sorted(total.items())} | {"count": count}
