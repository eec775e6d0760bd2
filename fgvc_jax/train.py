"""The generic trainer: train state, jitted train/eval steps over the device mesh, the loop.

The trainer knows nothing of any method (DESIGN.md): it asks `config.method` for a `Method`
(network, loss with named terms, prediction rule, parameter groups) and `config.data` for
iterators. One jitted step runs over a `Mesh(('data',))` of all devices of all processes:
parameters replicated, batch sharded, BatchNorm statistics over the global batch.

Determinism: the dropout key of step s is `fold_in(key(seed), s)` and the data iterator is
positioned at the restored step, so an interrupted run resumed from its checkpoint ends with
bitwise the same parameters as an uninterrupted one.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import signal
import time
from typing import Any, Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from flax import traverse_util

from fgvc_jax import checkpoints as ckpt_lib
from fgvc_jax import optim, parallel
from fgvc_jax.data import preprocess

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Preempted(Exception):
    """Raised after the checkpoint of a SIGTERM (pre-emption) has been written."""


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


# ---------------------------------------------------------------------------------------------
# Building blocks (pure functions of the config; the tests drive them directly).


def compute_dtype(config: ml_collections.ConfigDict):
    name = config.train.dtype
    if name not in DTYPES:
        raise ValueError(f"config.train.dtype={name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def create_method(config: ml_collections.ConfigDict, num_classes: int):
    """The `Method` of `config.method`, computing in `config.train.dtype` (params stay fp32)."""
    from fgvc_jax.methods import registry

    mconf = config.method
    if "dtype" in mconf and mconf.dtype != config.train.dtype:
        mconf = ml_collections.ConfigDict(mconf.to_dict())
        mconf.dtype = config.train.dtype
    return registry.create(mconf, num_classes)


def init_variables(method, image_shape: tuple[int, ...], seed: int, dtype) -> dict:
    """Fresh variables of the method's network (in training mode, so that training-only
    modules create their parameters)."""
    def init():
        x = jnp.zeros((2,) + tuple(image_shape), dtype)
        key = jax.random.key(seed)
        rngs = {"params": jax.random.fold_in(key, 1), "dropout": jax.random.fold_in(key, 2)}
        return dict(method.network.init(rngs, x, train=True))

    return jax.jit(init)()


def create_train_state(method, tx: optax.GradientTransformation, variables: dict,
                       mesh) -> TrainState:
    """Train state at step 0, replicated over the mesh."""
    return jax.jit(functools.partial(state_from_variables, tx),
                   out_shardings=parallel.replicated(mesh))(variables)


def state_from_variables(tx: optax.GradientTransformation, variables: dict) -> TrainState:
    """Train state at step 0 around `variables` ({'params', ['batch_stats']})."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(variables["params"]))


def abstract_state(tx: optax.GradientTransformation, variable_shapes: dict, mesh) -> TrainState:
    """Shapes, dtypes and shardings of the train state around variables of `variable_shapes`
    (from `jax.eval_shape(init_variables...)`), replicated: what checkpoints are restored into."""
    shapes = jax.eval_shape(functools.partial(state_from_variables, tx), variable_shapes)
    rep = parallel.replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def train_step(state: TrainState, batch: dict, *, method, tx, seed: int, dtype,
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
            images = preprocess.normalize(mb["image"], method.mean, method.std, dtype)
            outputs, mutated = network.apply(
                variables, images, train=True,
                rngs={"dropout": jax.random.fold_in(rng, index)},
                mutable=["batch_stats"] if has_bs else [])
            loss, terms = method.loss(outputs, mb["label"])
            probs = method.predict(outputs)
            acc = jnp.mean((jnp.argmax(probs, -1) == mb["label"]).astype(jnp.float32))
            aux = {**{f"loss/{k}": jnp.asarray(v, jnp.float32) for k, v in terms.items()},
                   "train_top1": acc}
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
                           dtype=compute_dtype(config), accumulate=config.optim.accumulate,
                           split=split)
    return jax.jit(fn, in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=0)


def eval_step(state: TrainState, batch: dict, *, method, dtype) -> dict:
    """Sums over the valid (mask) examples of top-1/top-5 hits of every head and of the
    method's combined prediction."""
    images = preprocess.normalize(batch["image"], method.mean, method.std, dtype)
    outputs = method.network.apply(state.variables(), images, train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    scores = dict(outputs.logits)
    scores["combined"] = method.predict(outputs)
    sums = {"count": mask.sum()}
    for name, s in scores.items():
        k = min(5, s.shape[-1])
        _, top = jax.lax.top_k(s.astype(jnp.float32), k)
        hit = top == labels[:, None]
        sums[f"top1/{name}"] = (hit[:, 0] * mask).sum()
        sums[f"top5/{name}"] = (hit.any(-1) * mask).sum()
    return sums


def make_eval_step(method, config: ml_collections.ConfigDict, mesh):
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    fn = functools.partial(eval_step, method=method, dtype=compute_dtype(config))
    return jax.jit(fn, in_shardings=(rep, dat), out_shardings=rep)


def evaluate(eval_fn, state: TrainState, batches: Iterator[dict], mesh) -> dict[str, float]:
    """Top-1/top-5 (percent) of every head over a finite iterator of padded batches."""
    total = None
    for batch in batches:
        sums = eval_fn(state, _to_global(batch, ("image", "label", "mask"), mesh))
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the evaluation split is empty")
    total = jax.device_get(total)
    count = float(total.pop("count"))
    return {k: 100.0 * float(v) / count for k, v in sorted(total.items())} | {"count": count}


def params_fingerprint(params) -> str:
    """Hash of this process's copy of the (replicated) parameters: equal on every process of
    a healthy data-parallel run."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return h.hexdigest()[:16]


def _to_global(batch: dict, keys, mesh) -> dict:
    return parallel.host_to_global({k: batch[k] for k in keys}, mesh)


# ---------------------------------------------------------------------------------------------
# The loop.


def _prepare_data(data, config: ml_collections.ConfigDict):
    """`data.prepare` on process 0 first (it may build the dataset into a shared data_dir),
    then on the others once it is there."""
    if jax.process_count() == 1:
        return data.prepare(config)
    from jax.experimental import multihost_utils

    info = data.prepare(config) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("fgvc_jax:prepare_data")
    return info if info is not None else data.prepare(config)


class _Run:
    """What a run needs, built once from the config (method, data, mesh, optimizer)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from fgvc_jax import data

        self.config, self.workdir, self.data = config, workdir, data
        self.mesh = parallel.make_mesh()
        self.batch_size = config.train.batch_size
        self.eval_batch_size = config.train.get("eval_batch_size", 0) or self.batch_size
        parallel.check_batch_size(self.batch_size, self.mesh)
        parallel.check_batch_size(self.eval_batch_size, self.mesh, "train.eval_batch_size")
        if self.batch_size % (config.optim.accumulate * self.mesh.devices.size):
            raise ValueError(
                f"config.train.batch_size={self.batch_size} must be a multiple of "
                f"config.optim.accumulate ({config.optim.accumulate}) x devices "
                f"({self.mesh.devices.size}).")
        self.info = _prepare_data(data, config.data)
        self.method = create_method(config, self.info.num_classes)
        self.steps_per_epoch = max(self.info.num_examples["train"] // self.batch_size, 1)
        t = config.train
        self.num_steps = (t.num_steps if t.get("num_steps", 0) > 0
                          else int(math.ceil(t.num_epochs * self.steps_per_epoch)))
        self.eval_every = (t.eval_every_steps if t.get("eval_every_steps", 0) > 0 else
                           int(round(t.get("eval_every_epochs", 0) * self.steps_per_epoch)))
        self.dtype = compute_dtype(config)

    def train_iterator(self, start_step: int):
        return self.data.train_iterator(self.config.data, global_batch_size=self.batch_size,
                                        seed=self.config.seed, start_step=start_step)

    def eval_iterator(self):
        return self.data.eval_iterator(self.config.data, global_batch_size=self.eval_batch_size)

    def initial_variables(self, image_shape) -> dict:
        variables = init_variables(self.method, image_shape, self.config.seed, self.dtype)
        init = self.config.init
        if init.get("pretrained"):
            variables = ckpt_lib.load_pretrained(variables, init.pretrained,
                                                 arch=self.method.backbone_arch,
                                                 dont_load=init.get("dont_load", ""),
                                                 backbone_kwargs=self.method.backbone_kwargs)
        return variables

    def optimizer(self, params) -> optax.GradientTransformation:
        return optim.create_optimizer(self.config.optim, params, self.method.param_groups(),
                                      total_steps=self.num_steps,
                                      steps_per_epoch=self.steps_per_epoch)


def _writer(workdir: str):
    if jax.process_index() == 0:
        return metric_writers.create_default_writer(workdir, asynchronous=True)
    return metric_writers.MultiWriter([])


def _log_overview(run: _Run, params) -> None:
    if jax.process_index() != 0:
        return
    parameter_overview.log_parameter_overview(params)
    labels = optim.group_labels(params, run.method.param_groups())
    counts: dict[str, int] = {}
    for label, p in zip(jax.tree.leaves(labels), jax.tree.leaves(params)):
        counts[label] = counts.get(label, 0) + int(np.prod(p.shape))
    for g, n in sorted(counts.items()):
        logging.info("parameter group %-10s %12d params  peak lr %g", g, n,
                     run.config.optim.lr[g])
    logging.info("%d devices over %d process(es); global batch %d; %d steps (%d per epoch)",
                 jax.device_count(), jax.process_count(), run.batch_size, run.num_steps,
                 run.steps_per_epoch)


class _Sigterm:
    """Turns SIGTERM into a flag the loop polls (pre-emptible pods); multi-process runs use
    JAX's preemption sync point so that every process saves at the same step."""

    def __init__(self):
        self.flag = False
        self.previous = None
        if jax.process_count() == 1:
            try:
                self.previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint at the current step")
        self.flag = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.flag

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _Pending:
    """Per-step metrics kept on the device until they are logged (no host stalls), and the
    NaN/Inf check that stops a run before a bad checkpoint is written."""

    def __init__(self):
        self.items: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict):
        self.items.append((step, metrics))

    def check(self, up_to: int | None = None) -> list[tuple[int, dict]]:
        """Fetch the pending metrics of steps <= `up_to` (all if None) and raise naming the
        first step with a NaN/Inf loss; later steps stay on the device (still running)."""
        n = len([s for s, _ in self.items if up_to is None or s <= up_to])
        self.items[:n] = jax.device_get(self.items[:n])
        for step, m in self.items[:n]:
            if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
                raise FloatingPointError(
                    f"Loss is {m['loss']} (gradient norm {m['grad_norm']}) at step {step}: "
                    "stopping. The last good checkpoint is kept.")
        return self.items[:n]

    def drain(self, up_to: int | None = None) -> list[tuple[int, dict]]:
        items = self.check(up_to)
        self.items = self.items[len(items):]
        return items


def _mean_metrics(items: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of each training metric over the logged steps; learning rates of the last step."""
    out = {}
    for k in items[-1][1]:
        if k.startswith("lr/"):
            out[k] = float(items[-1][1][k])
        else:
            out[f"train/{k}"] = float(np.mean([m[k] for _, m in items]))
    return out


def _hparams(config: ml_collections.ConfigDict) -> dict:
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def _write_json(path: str, obj: dict) -> None:
    if jax.process_index() == 0:
        epath.Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate every
    `eval_every` steps and at the end; write `<workdir>/config.json` and `<workdir>/eval.json`. Returns the final state."""
    parallel.initialize_distributed()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    run = _Run(config, workdir)
    t = config.train
    ckpts = ckpt_lib.Checkpoints(workdir, keep=t.keep, best_metric=t.best_metric)
    writer = _writer(workdir)

    start_step = ckpts.latest_step() or 0
    train_iter = run.train_iterator(start_step)
    first = next(train_iter)
    image_shape = tuple(np.shape(first["image"])[1:])
    train_iter = itertools.chain([first], train_iter)

    shapes = jax.eval_shape(lambda: init_variables(run.method, image_shape, config.seed,
                                                   run.dtype))
    tx = run.optimizer(shapes["params"])
    if start_step > 0:
        state, _ = ckpts.restore(abstract_state(tx, shapes, run.mesh), "latest")
        logging.info("Resumed from %s at step %d", ckpts.latest.directory, start_step)
    else:
        state = create_train_state(run.method, tx, run.initial_variables(image_shape), run.mesh)
    _log_overview(run, state.params)
    if start_step == 0 and jax.process_index() == 0:
        writer.write_hparams(_hparams(config))
    if jax.process_index() == 0:  # lets the tools rebuild the run from --workdir alone
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))

    step_fn = make_train_step(run.method, tx, config, run.mesh)
    eval_fn = make_eval_step(run.method, config, run.mesh)
    progress = periodic_actions.ReportProgress(num_train_steps=run.num_steps, writer=writer,
                                               every_steps=t.log_every, every_secs=None)
    sigterm = _Sigterm()
    pending = _Pending()
    to_log: list[tuple[int, dict]] = []
    last_log = (start_step, time.perf_counter())
    timing = {"t0": None, "s0": None, "eval_s": 0.0}
    result: dict[str, Any] = {}

    def log(step: int):
        nonlocal last_log
        items = pending.drain(step)
        if not items:
            return
        now = time.perf_counter()
        s0, t0 = last_log
        summary = _mean_metrics(items)
        if now > t0 and step > s0:
            summary["train/images_per_sec"] = (step - s0) * run.batch_size / (now - t0)
        writer.write_scalars(step, summary)
        last_log = (step, now)

    def do_eval(step: int) -> dict:
        t_start = time.perf_counter()
        metrics = evaluate(eval_fn, state, run.eval_iterator(), run.mesh)
        timing["eval_s"] += time.perf_counter() - t_start
        writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items() if k != "count"})
        if t.best_metric not in metrics:
            raise ValueError(f"config.train.best_metric={t.best_metric!r}; valid: "
                             f"{', '.join(k for k in metrics if k != 'count')}")
        pending.check()  # never save a checkpoint past a NaN
        if ckpts.save_best(step, state, metrics):
            logging.info("step %d: new best %s = %.2f", step, t.best_metric,
                         metrics[t.best_metric])
        return metrics

    try:
        step = start_step
        for step in range(start_step + 1, run.num_steps + 1):
            batch = _to_global(next(train_iter), ("image", "label"), run.mesh)
            state, metrics = step_fn(state, batch)
            pending.add(step, metrics)
            if to_log:  # log the previous log step now that this step is queued
                log(to_log.pop())
            if step == start_step + 1:
                jax.block_until_ready(state)
                timing["t0"], timing["s0"] = time.perf_counter(), step
                log(step)
            elif step % t.log_every == 0:
                to_log.append(step)
            progress(step)
            if sigterm.reached(step):
                pending.check()
                ckpts.save(step, state)
                ckpts.wait()
                raise Preempted(f"Pre-empted: checkpoint of step {step} saved in {workdir}")
            if run.eval_every and step % run.eval_every == 0 and step < run.num_steps:
                with progress.timed("eval"):
                    do_eval(step)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < run.num_steps:
                pending.check()
                ckpts.save(step, state)
        if to_log:
            log(to_log.pop())
        log(step)
        jax.block_until_ready(state)
        # training time only: before the final evaluation adds to timing["eval_s"]
        train_s = (time.perf_counter() - timing["t0"] - timing["eval_s"]) if timing["t0"] else 0.0
        if step > start_step:
            ckpts.save(step, state)
        final = do_eval(step)
        ckpts.wait()
        steps = step - (timing["s0"] or step)
        result = {"step": int(step), "metrics": final, "num_steps": run.num_steps,
                  "best": {t.best_metric: ckpts.best_value()},
                  "train_steps_per_sec": steps / train_s if train_s > 0 and steps else None,
                  "train_images_per_sec": (steps * run.batch_size / train_s
                                           if train_s > 0 and steps else None)}
        result["params_fingerprint"] = params_fingerprint(state.params)
        logging.info("process %d of %d: parameter fingerprint %s", jax.process_index(),
                     jax.process_count(), result["params_fingerprint"])
        _write_json(os.path.join(workdir, "eval.json"), result)
        if jax.process_index() == 0:
            logging.info("Final evaluation at step %d: %s", step,
                         ", ".join(f"{k} {v:.2f}" for k, v in final.items() if k != "count"))
    except FloatingPointError as e:
        ckpts.wait()
        last = ckpts.latest_step()
        raise FloatingPointError(
            f"{e} Last good checkpoint: "
            + (f"step {last} in {ckpts.latest.directory}" if last else "none yet")) from None
    finally:
        sigterm.restore()
        writer.flush()
        ckpts.wait()
        ckpts.close()
    return state


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        which: str = "best") -> dict:
    """`--mode eval`: evaluate the best (or latest) checkpoint of `workdir` on the test split
    and write `<workdir>/eval.json`."""
    parallel.initialize_distributed()
    run = _Run(config, workdir)
    ckpts = ckpt_lib.Checkpoints(workdir, keep=config.train.keep,
                                 best_metric=config.train.best_metric)
    batch = next(iter(run.eval_iterator()))
    image_shape = tuple(np.shape(batch["image"])[1:])
    shapes = jax.eval_shape(lambda: init_variables(run.method, image_shape, config.seed,
                                                   run.dtype))
    tx = run.optimizer(shapes["params"])
    restored = ckpts.restore_for_eval(abstract_state(tx, shapes, run.mesh), which)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {os.path.abspath(workdir)} "
                                "(checkpoints/ or best/): train first with --mode train.")
    state, step = restored
    metrics = evaluate(make_eval_step(run.method, config, run.mesh), state,
                       run.eval_iterator(), run.mesh)
    result = {"step": int(step), "checkpoint": which, "metrics": metrics}
    _write_json(os.path.join(workdir, "eval.json"), result)
    ckpts.close()
    return result
