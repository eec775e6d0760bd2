"""The training loop: resume, step, log, evaluate, checkpoint (and `--mode eval`).

The trainer knows nothing of any method: `Experiment` builds the run from the config (dataset,
method, mesh, lengths), `state` the train state, `step` the jitted steps.

Determinism: the dropout key of step s is `fold_in(key(seed), s)` and the data iterator is
positioned at the restored step, so an interrupted run resumed from its checkpoint ends with
bitwise the same parameters as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from flax import traverse_util

from fgvc_jax import checkpoints as ckpt_lib
from fgvc_jax import optim, parallel, state as state_lib, step as step_lib
from fgvc_jax.experiment import Experiment


class Preempted(Exception):
    """Raised after the checkpoint of a SIGTERM (pre-emption) has been written."""


def params_fingerprint(params) -> str:
    """Hash of this process's copy of the (replicated) parameters: equal on every process of
    a healthy data-parallel run."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return h.hexdigest()[:16]


def _writer(workdir: str):
    if jax.process_index() == 0:
        return metric_writers.create_default_writer(workdir, asynchronous=True)
    return metric_writers.MultiWriter([])


def _log_overview(run: Experiment, params) -> None:
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> state_lib.TrainState:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate every
    `eval_every` steps and at the end; write `<workdir>/config.json` and `<workdir>/eval.json`.
    Returns the final state."""
    parallel.initialize_distributed()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    run = Experiment(config)
    t = config.train
    ckpts = ckpt_lib.Checkpoints(workdir, keep=t.keep, best_metric=t.best_metric)
    writer = _writer(workdir)

    start_step = ckpts.latest_step() or 0
    train_iter = run.train_iterator(start_step)
    shapes = run.variable_shapes()
    tx = run.optimizer(shapes["params"])
    if start_step > 0:
        state, _ = ckpts.restore(state_lib.abstract_state(tx, shapes, run.mesh), "latest")
        logging.info("Resumed from %s at step %d", ckpts.latest.directory, start_step)
    else:
        state = state_lib.create_train_state(tx, run.initial_variables(), run.mesh)
    _log_overview(run, state.params)
    if start_step == 0 and jax.process_index() == 0:
        writer.write_hparams(_hparams(config))
    if jax.process_index() == 0:  # lets the tools rebuild the run from --workdir alone
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))

    step_fn = step_lib.make_train_step(run.method, tx, config, run.mesh)
    eval_fn = step_lib.make_eval_step(run.method, run.mesh)
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
        metrics = step_lib.evaluate(eval_fn, state.variables(), run.eval_iterator(), run.mesh)
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
            batch = next(train_iter)
            batch = parallel.host_to_global({k: batch[k] for k in ("image", "label")}, run.mesh)
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
    run = Experiment(config)
    restored = state_lib.restore_workdir_variables(workdir, config, run.variable_shapes(),
                                                   run.mesh, which)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {os.path.abspath(workdir)} "
                                "(checkpoints/ or best/): train first with --mode train.")
    variables, step = restored
    metrics = step_lib.evaluate(step_lib.make_eval_step(run.method, run.mesh), variables,
                                run.eval_iterator(), run.mesh)
    result = {"step": int(step), "checkpoint": which, "metrics": metrics}
    _write_json(os.path.join(workdir, "eval.json"), result)
    return result
