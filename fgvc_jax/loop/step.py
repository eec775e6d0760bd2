"""The jitted train and eval steps over the device mesh, and evaluation over an iterator.

One jitted step runs over a `Mesh(('data',))` of all devices of all processes: parameters
replicated, batch sharded, BatchNorm statistics over the global batch. The dropout key of
step s is `fold_in(key(seed), s)`, so a step is a pure function of (state, batch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from fgvc_jax import recipe as recipe_lib
from fgvc_jax.backbones import batch_norm
from fgvc_jax.data import augment, cache, preprocess
from fgvc_jax.recipe import optim
from fgvc_jax.recipe.train_state import TrainState
from fgvc_jax.runtime import parallel


def sown_metrics(tree) -> dict[str, jax.Array]:
    """What modules sowed into the 'metrics' collection ({'metrics/<module path>/<name>':
    value}), e.g. CRAM's 'cram3/suppressed_channels' (each sown value replaces the last)."""
    flat = traverse_util.flatten_dict(dict(tree), sep="/")
    return {f"metrics/{k}": jnp.asarray(v, jnp.float32) for k, v in flat.items()}


def ema_update(ema, params, decay: float):
    """EMA of the weights: ema ← decay · ema + (1 − decay) · params."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def device_augment(batch: dict, data_config, seed: int, step, num_classes: int) -> dict:
    """The global batch of uncropped S×S uint8 images (the decoded cache) augmented on the
    device (`augment.train_batch`: crop, flip, ...; every draw keyed by (seed, step,
    position)); mixed batches (mixup / CutMix) carry soft 'targets' and their dominant class
    as 'label'."""
    images, targets = augment.train_batch(
        batch["image"], batch["label"], augment.step_key(seed, step), data_config, num_classes
    )
    if not augment.mixes(data_config):
        return {"image": images, "label": batch["label"]}
    return {"image": images, "label": jnp.argmax(targets, -1).astype(jnp.int32), "targets": targets}


def train_step(
    state: TrainState,
    batch: dict,
    *,
    method,
    tx,
    seed: int,
    accumulate: int = 1,
    split: Callable | None = None,
    ema_decay: float = 0.0,
    data_config=None,
    batch_norm_groups: int = 1,
):
    """One optimizer update on a global batch (and of the weights' EMA when `ema_decay` > 0);
    returns (new state, metrics of this step). With `data_config` the batch holds S×S
    images augmented here, on the device (`device_augment`). `batch_norm_groups` > 1: BatchNorm
    statistics per device (`batch_norm.per_device`)."""
    network = method.network
    has_bs = bool(state.batch_stats)
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    if data_config is not None:
        batch = device_augment(batch, data_config, seed, state.step, method.num_classes)

    def grad_fn(params, batch_stats, mb, index):
        def loss_fn(params):
            variables = {"params": params}
            if has_bs:
                variables["batch_stats"] = batch_stats
            images = preprocess.normalize(mb["image"], method.mean, method.std, method.dtype)
            with batch_norm.per_device(batch_norm_groups):
                outputs, mutated = network.apply(
                    variables,
                    images,
                    train=True,
                    rngs={"dropout": jax.random.fold_in(rng, index)},
                    mutable=["batch_stats", "metrics"] if has_bs else ["metrics"],
                )
            if "targets" in mb:
                loss, terms = method.loss(outputs, mb["label"], mb["targets"])
            else:
                loss, terms = method.loss(outputs, mb["label"])
            probs = method.predict(outputs)
            acc = jnp.mean((jnp.argmax(probs, -1) == mb["label"]).astype(jnp.float32))
            aux = {
                **{f"loss/{k}": jnp.asarray(v, jnp.float32) for k, v in terms.items()},
                **sown_metrics(mutated.get("metrics", {})),
                "top1": 100.0 * acc,
            }
            # float32 at least (a bfloat16 step's too); float64 in a float64 step (compare)
            loss = loss.astype(jnp.promote_types(loss.dtype, jnp.float32))
            return loss, (aux, mutated.get("batch_stats", batch_stats))

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, aux), batch_stats, grads = optim.accumulate_gradients(
        grad_fn, state.params, state.batch_stats, batch, accumulate, split
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    if ema_decay > 0:
        new_state = new_state.replace(ema_params=ema_update(state.ema_params, params, ema_decay))
    metrics = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads)}
    metrics.update({f"lr/{g}": lr for g, lr in optim.learning_rates(opt_state).items()})
    metrics[STATE_FINITE] = all_finite((params, batch_stats, opt_state))
    return new_state, metrics


#: Metric of the train step: whether the updated params, batch statistics and optimizer state
#: are all finite. A finite loss does not say so (an update can overflow: lr 1e39 turns every
#: parameter to inf after a finite loss), and the trainer saves a state only when it is
#: finite. Checked in the step, not on the host before saving: one fused reduction over the
#: state the step has just written, with no transfer and no wait.
STATE_FINITE = "state_finite"


def all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else True


def _device_augments(config) -> bool:
    """Whether training batches come uncropped from the decoded cache (configs without a
    data section, e.g. the benchmarks' bare steps, feed ready-cropped batches)."""
    return "data" in config and cache.applies(config.data)


def make_train_step(method, tx, config: ml_collections.ConfigDict, mesh):
    """`train_step` jitted over `mesh`: state replicated (donated), batch sharded on 'data'."""
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    micro = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
    split = lambda tree: jax.lax.with_sharding_constraint(tree, micro)
    fn = functools.partial(
        train_step,
        method=method,
        tx=tx,
        seed=config.seed,
        accumulate=config.optim.accumulate,
        split=split,
        ema_decay=recipe_lib.ema_decay(config),
        data_config=config.data if _device_augments(config) else None,
        batch_norm_groups=recipe_lib.batch_norm_groups(config, mesh),
    )
    return jax.jit(fn, in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=0)


def eval_step(variables: dict, batch: dict, *, method) -> dict:
    """Sums over the valid (mask) examples of top-1/top-5 hits of every score of
    `method.scores` (each head and the combined prediction), and per class (for the mean
    per-class accuracy, FGVC-Aircraft's official metric)."""
    images = preprocess.normalize(batch["image"], method.mean, method.std, method.dtype)
    outputs = method.network.apply(variables, images, train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    scores = method.scores(outputs)
    per_class = jax.nn.one_hot(labels, next(iter(scores.values())).shape[-1]) * mask[:, None]
    sums = {"count": mask.sum(), "class_count": per_class.sum(0)}
    for name, s in scores.items():
        _, top = jax.lax.top_k(s, min(5, s.shape[-1]))
        hit = top == labels[:, None]
        sums[f"top1/{name}"] = (hit[:, 0] * mask).sum()
        sums[f"top5/{name}"] = (hit.any(-1) * mask).sum()
        sums[f"class_hits/{name}"] = (per_class * hit[:, :1]).sum(0)
    return sums


def make_eval_step(method, mesh):
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    return jax.jit(
        functools.partial(eval_step, method=method), in_shardings=(rep, dat), out_shardings=rep
    )


def evaluate(eval_fn, variables: dict, batches: Iterator[dict], mesh) -> dict[str, float]:
    """Top-1/top-5 and mean per-class accuracy (percent) of every score over a finite
    iterator of padded batches."""
    total = None
    for batch in batches:
        sums = eval_fn(
            variables,
            parallel.host_to_global({k: batch[k] for k in ("image", "label", "mask")}, mesh),
        )
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the evaluation split is empty")
    total = jax.device_get(total)
    count = float(total.pop("count"))
    class_count = total.pop("class_count")
    seen = class_count > 0
    out = {}
    for k, v in sorted(total.items()):
        if k.startswith("class_hits/"):  # mean over the classes present of their accuracy
            out["mean_class/" + k.split("/", 1)[1]] = float(
                100.0 * np.mean(v[seen] / class_count[seen])
            )
        else:
            out[k] = 100.0 * float(v) / count
    return out | {"count": count}
