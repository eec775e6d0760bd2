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
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import parameter_overview
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils

from fgvc_jax.loop import profile as profile_lib
from fgvc_jax.loop import step as step_lib
from fgvc_jax.loop.experiment import Experiment
from fgvc_jax.recipe import optim
from fgvc_jax.recipe import train_state as state_lib
from fgvc_jax.run import checkpoints as ckpt_lib
from fgvc_jax.run import curves, model_card, restore, trained
from fgvc_jax.run import workdir as workdir_lib
from fgvc_jax.run.log import RunLog
from fgvc_jax.runtime import parallel


class Preempted(Exception):
    """Raised after the checkpoint of a SIGTERM (pre-emption) or SIGINT has been written;
    `exit_code` 143 or 130."""

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


def params_fingerprint(params) -> str:
    """Hash of this process's copy of the (replicated) parameters: equal on every process of
    a healthy data-parallel run."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return h.hexdigest()[:16]


def _log_overview(run: Experiment, params, workdir: str) -> None:
    """The parameter table (written once per workdir to `<workdir>/parameters.txt`; on the
    console only with --verbosity=1) and the parameter groups."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "parameters.txt")
    if not os.path.exists(path) or logging.get_verbosity() >= 1:
        table = parameter_overview.get_parameter_overview(params)
        with open(path, "w") as f:
            f.write(table + "\n")
        logging.vlog(1, "Parameters (also in %s):\n%s", path, table)
    labels = optim.group_labels(params, run.method.param_groups())
    counts: dict[str, int] = {}
    for label, p in zip(jax.tree.leaves(labels), jax.tree.leaves(params)):
        counts[label] = counts.get(label, 0) + int(np.prod(p.shape))
    groups = ", ".join(
        f"{g} {n / 1e6:.2f}M @ lr {run.config.optim.lr[g]:g}" for g, n in sorted(counts.items())
    )
    logging.info(
        "%s on %s: %d devices / %d process(es), global batch %d, %d steps "
        "(%d per epoch); parameter groups: %s",
        run.config.method.name,
        run.config.data.name,
        jax.device_count(),
        jax.process_count(),
        run.batch_size,
        run.num_steps,
        run.steps_per_epoch,
        groups,
    )


class _Sigterm:
    """Turns SIGTERM (pre-emption) and SIGINT (Ctrl-C) into a flag the loop polls: the step
    in progress ends, its checkpoint is written, the process exits 143 or 130. A second
    Ctrl-C stops at once. Multi-process runs use JAX's preemption sync point so that every
    process saves at the same step (SIGINT is left to Python there). In the final evaluation
    (`final`: the last step's checkpoint is written) the flag ends the evaluation."""

    EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}

    def __init__(self):
        self.flag, self.signum, self.final = False, None, False
        self.previous = {}
        if jax.process_count() == 1:
            try:
                for signum in self.EXIT:
                    self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.final:
            logging.warning(
                "%s received during the final evaluation: stopping it (the last step's "
                "checkpoint is written; eval.json is not).",
                name,
            )
        else:
            logging.warning("%s received: saving a checkpoint at the current step", name)
        if signum == signal.SIGINT:  # a second Ctrl-C: KeyboardInterrupt, at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.flag, self.signum = True, self.signum or signum

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.flag

    def exit_code(self) -> int:
        return self.EXIT.get(self.signum, 143)

    def what(self) -> str:
        return "Interrupted (SIGINT)" if self.signum == signal.SIGINT else "Pre-empted"

    def batches(self, batches):
        """`batches`, stopped by a signal during the final evaluation."""
        for batch in batches:
            if self.final and self.flag:
                raise _FinalStopped
            yield batch
        if self.final and self.flag:
            raise _FinalStopped

    def restore(self):
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)


class _FinalStopped(Exception):
    """A signal came during the final evaluation."""


class NonFinite(FloatingPointError):
    """A NaN/Inf at `step`: in its loss or gradient (`diverged`: the state of step - 1 gives
    them, whatever the learning rate, since they depend only on that state and the step's
    batch), or in the state its update made (the state of step - 1 is good; the learning
    rate was too high)."""

    def __init__(self, message: str, step: int, diverged: bool):
        super().__init__(message)
        self.step, self.diverged = step, diverged


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
                raise NonFinite(
                    f"Loss is {m['loss']} (gradient norm {m['grad_norm']}) at step {step}: "
                    "stopping.",
                    step,
                    diverged=True,
                )
            if not m.get(step_lib.STATE_FINITE, True):  # a finite loss, an overflowing update
                raise NonFinite(
                    f"The update of step {step} made the parameters or optimizer state "
                    f"non-finite (loss {m['loss']}, gradient norm {m['grad_norm']}): "
                    "stopping; that state is not saved.",
                    step,
                    diverged=False,
                )
        return self.items[:n]

    def drain(self, up_to: int | None = None) -> list[tuple[int, dict]]:
        items = self.check(up_to)
        self.items = self.items[len(items) :]
        return items


def _mean_metrics(items: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of each training metric over the logged steps; learning rates of the last step."""
    out = {}
    for k in items[-1][1]:
        if k == step_lib.STATE_FINITE:
            continue
        if k.startswith("lr/"):
            out[k] = float(items[-1][1][k])
        else:
            out[f"train/{k}"] = float(np.mean([m[k] for _, m in items]))
    return out


def _eval_summary(metrics: dict[str, float]) -> str:
    keys = [k for k in ("top1/combined", "top5/combined", "ema/top1/combined") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.2f}" for k in keys)


def _hparams(config: ml_collections.ConfigDict) -> dict:
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


class _EarlyStop:
    """`train.early_stop_patience` > 0: stop after that many evaluations in a row whose metric
    (`key`, as metrics.jsonl names it: the best checkpoint's metric on the selection split)
    is not above the best so far + `early_stop_min_delta`. A resumed run replays the
    evaluations that metrics.jsonl holds up to its restored step, so it stops where an
    uninterrupted run does (the counter is not in the checkpoint)."""

    def __init__(self, train: ml_collections.ConfigDict, key: str):
        self.patience = int(train.get("early_stop_patience", 0) or 0)
        self.min_delta = float(train.get("early_stop_min_delta", 0.0) or 0.0)
        self.key = key
        self.best, self.best_step, self.bad = -math.inf, None, 0
        self.evaluated: set[int] = set()

    @property
    def stop(self) -> bool:
        return 0 < self.patience <= self.bad

    def update(self, step: int, value: float) -> bool:
        """Count the evaluation of `step`; True once the run should stop."""
        self.evaluated.add(step)
        if value > self.best + self.min_delta:
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return self.stop

    def replay(self, workdir: str, up_to: int) -> None:
        """The evaluations of steps <= `up_to` logged in `<workdir>/metrics.jsonl` (every
        process reads it: the workdir is shared, as the checkpoints need)."""
        values = {}
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:  # a line cut short by a crash
                        continue
                    if self.key in row and row["step"] <= up_to:
                        values[int(row["step"])] = float(row[self.key])  # a repeat: the same
        for s in sorted(values):
            self.update(s, values[s])

    def message(self, step: int) -> str:
        return (
            f"early stop at step {step}: no improvement of {self.key} for {self.bad} "
            f"evaluations (best {self.best:.2f} at step {self.best_step})"
        )


def _write_json(path: str, obj: dict) -> None:
    if jax.process_index() == 0:
        epath.Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False
) -> state_lib.TrainState:
    """Train `config` in `workdir`: one run per workdir (`workdir.RunLock`, held to the end);
    resuming with another config than the run's stops unless `allow_config_change`
    (`workdir.check_start`); the start is recorded once its checkpoint was read, so a
    refused start leaves the workdir's config record as it was."""
    parallel.initialize_distributed()
    with workdir_lib.RunLock(workdir, "train"):  # issue 16: lock and config record
        start = workdir_lib.check_start(
            workdir,
            config,
            resuming=ckpt_lib.has_checkpoints(workdir),
            allow_change=allow_config_change,
        )
        return _train_and_evaluate(config, workdir, start.record)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, accepted=lambda: None
) -> state_lib.TrainState:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate every
    `eval_every` steps and at the end (or at an early stop, `_EarlyStop`); write `<workdir>/config.json`, `model.json` (what the
    tools need without the dataset) and `eval.json`. Returns the final state. `accepted` is
    called once the state is restored or created (it records the start)."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    run = Experiment(config)
    t = config.train
    ema = run.recipe.ema
    ckpts = ckpt_lib.Checkpoints(
        workdir, keep=t.keep, best_metric=t.best_metric, method=config.method.name
    )
    log = RunLog(
        workdir,
        num_steps=run.num_steps,
        steps_per_epoch=run.steps_per_epoch,
        batch_size=run.batch_size,
        wandb_project=t.get("wandb_project", ""),
        run_config=config.to_dict(),
    )

    shapes = run.recipe.variable_shapes
    run.recipe.check_best_metric()
    tx = run.optimizer()
    # issue 16: the newest checkpoint that reads and verifies (damaged ones moved aside)
    abstract = run.recipe.abstract_state(tx, run.mesh)
    try:
        restored = ckpts.restore(abstract, "latest")
    except ckpt_lib.Mismatch as e:
        raise workdir_lib.WorkdirError(f"{e} Start this config in a new --workdir.") from None
    source = config.init.get("resume_from") or ""
    resumed_here = restored is not None
    if not resumed_here and source:  # another run's checkpoint, optimizer state and all
        folder = ckpt_lib.resume_source(source)
        try:
            restored = ckpt_lib.read_state(folder, abstract, config.method.name)
        except ckpt_lib.Mismatch as e:
            raise ValueError(f"config.init.resume_from={source!r}: {e}") from None
        logging.info("Going on from %s (config.init.resume_from) at step %d", folder, restored[1])
    if restored is not None:
        state, start_step = restored
        workdir_lib.check_length(start_step, run.num_steps, workdir)
        if resumed_here:
            logging.info("Resumed from %s at step %d", ckpts.latest.directory, start_step)
    else:
        start_step = 0
        state = run.recipe.create_state(tx, run.initial_variables(), run.mesh)
    accepted()
    train_iter = profile_lib.batches(run.train_iterator(start_step))
    _log_overview(run, state.params, workdir)
    if start_step == 0:
        log.hparams(_hparams(config))
    model_card.write(workdir, config, run.info, run.method)

    step_fn = run.recipe.train_step(tx, run.mesh)
    eval_fn = run.recipe.eval_step(run.mesh)
    sigterm = _Sigterm()
    pending = _Pending()
    to_log: list[int] = []
    timing = {"t0": None, "s0": None, "eval_s": 0.0}
    result: dict[str, Any] = {}

    @profile_lib.annotated(profile_lib.LOG)
    def log_step(step: int):
        items = pending.drain(step)
        if not items:
            return
        summary = _mean_metrics(items)
        ips = log.images_per_sec(step)
        if ips is not None:
            summary["train/images_per_sec"] = ips
        log.scalars(step, summary)
        lrs = {k[3:]: v for k, v in summary.items() if k.startswith("lr/")}
        log.progress(step, summary["train/loss"], lrs, ips)

    selection = "val" if run.splits.val else "test"  # the split the best checkpoint is chosen on

    def evaluate(variables_of, which: str) -> dict:
        """Metrics of the weights (and their EMA) on the 'val' or 'test' split."""
        metrics = step_lib.evaluate(
            eval_fn, variables_of(False), sigterm.batches(run.eval_iterator(which)), run.mesh
        )
        if ema:
            ema_metrics = step_lib.evaluate(
                eval_fn, variables_of(True), sigterm.batches(run.eval_iterator(which)), run.mesh
            )
            metrics.update({f"ema/{k}": v for k, v in ema_metrics.items() if k != "count"})
        return metrics

    @profile_lib.annotated(profile_lib.EVAL)
    def do_eval(step: int) -> dict:
        t_start = time.perf_counter()
        metrics = evaluate(lambda e: state.variables(ema=e), "val")
        timing["eval_s"] += time.perf_counter() - t_start
        log.scalars(step, {f"{selection}/{k}": v for k, v in metrics.items() if k != "count"})
        log.line(f"step {step}: {selection} {_eval_summary(metrics)}")
        pending.check()  # never save a checkpoint past a NaN
        if ckpts.save_best(step, state, metrics):
            logging.info("step %d: new best %s = %.2f", step, t.best_metric, metrics[t.best_metric])
        log.restart_clock(step)
        return metrics

    early = _EarlyStop(t, f"{selection}/{t.best_metric}")
    stopped = None  # the metrics of the evaluation that stopped the run early
    if early.patience and 0 < start_step < run.num_steps:
        early.replay(workdir, start_step)
        every = run.eval_every
        missed = every and start_step % every == 0 and start_step not in early.evaluated
        if missed and not early.stop:  # a pre-emption at an evaluation step saves before it
            evaluation = do_eval(start_step)
            if early.update(start_step, evaluation[t.best_metric]):
                stopped = evaluation
    train_steps = profile_lib.steps(
        range(start_step + 1, start_step + 1 if early.stop else run.num_steps + 1),
        workdir,
        t.get("profile_steps", 0),
        profile_lib.first_traced_step(start_step, t.log_every),
        sync=lambda: jax.block_until_ready(state),
    )
    try:
        step = start_step
        for step in train_steps:
            batch = next(train_iter)
            batch = parallel.host_to_global({k: batch[k] for k in ("image", "label")}, run.mesh)
            state, metrics = step_fn(state, batch)
            pending.add(step, metrics)
            ckpts.check()  # a failed asynchronous save stops the run at the next step
            if to_log:  # log the previous log step now that this step is queued
                log_step(to_log.pop())
            if step == start_step + 1:  # compiled: the clock starts after the first step
                jax.block_until_ready(state)
                timing["t0"], timing["s0"] = time.perf_counter(), step
                log_step(step)
                log.restart_clock(step)
            elif step % t.log_every == 0:
                to_log.append(step)
            if sigterm.reached(step):
                pending.check()
                ckpts.save(step, state)
                ckpts.wait()
                raise Preempted(
                    f"{sigterm.what()}: checkpoint of step {step} saved in {workdir}",
                    sigterm.exit_code(),
                )
            if run.eval_every and step % run.eval_every == 0 and step < run.num_steps:
                if to_log:
                    log_step(to_log.pop())
                evaluation = do_eval(step)
                if early.update(step, evaluation[t.best_metric]):
                    stopped = evaluation
                    break
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < run.num_steps:
                with profile_lib.annotation(profile_lib.CHECKPOINT):
                    pending.check()
                    ckpts.save(step, state)
        if to_log:
            log_step(to_log.pop())
        log_step(step)
        jax.block_until_ready(state)
        # training time only: before the final evaluation adds to timing["eval_s"]
        train_s = (time.perf_counter() - timing["t0"] - timing["eval_s"]) if timing["t0"] else 0.0
        if step > start_step:
            ckpts.save(step, state)
        if early.stop:
            log.line(early.message(step))
        # A signal from here on stops the evaluation: the last step's checkpoint is written,
        # and a restart trains nothing and evaluates it.
        sigterm.final = True
        try:
            final = stopped if stopped is not None else do_eval(step)
            ckpts.wait()
            test = (
                final if selection == "test" else evaluate(lambda e: state.variables(ema=e), "test")
            )
            best_step = ckpts.best.latest_step()
            test_best = test
            if best_step is not None and best_step != step:
                best_dir = ckpts.find("best")[0]
                test_best = evaluate(
                    lambda e: restore.restore_variables(best_dir, shapes, run.mesh, ema=e), "test"
                )
        except _FinalStopped:
            ckpts.wait()
            raise Preempted(
                f"{sigterm.what()} during the final evaluation: the "
                f"checkpoint of step {step} is saved in {workdir}, eval.json is not written; "
                "run the same command to evaluate it (nothing is trained again).",
                sigterm.exit_code(),
            ) from None
        steps = step - (timing["s0"] or step)
        result = {
            "step": int(step),
            "metrics": test,
            "num_steps": run.num_steps,
            "early_stopped_at": int(step) if early.stop else None,
            "selection_split": run.splits.val or run.splits.test,
            "selection": final,
            "test_best": {"step": best_step, "metrics": test_best},
            "best": {t.best_metric: ckpts.best_value()},
            "train_steps_per_sec": steps / train_s if train_s > 0 and steps else None,
            "train_images_per_sec": (
                steps * run.batch_size / train_s if train_s > 0 and steps else None
            ),
        }
        result["params_fingerprint"] = params_fingerprint(state.params)
        logging.info(
            "process %d of %d: parameter fingerprint %s",
            jax.process_index(),
            jax.process_count(),
            result["params_fingerprint"],
        )
        _write_json(os.path.join(workdir, "eval.json"), result)
        log.scalars(step, {f"test/{k}": v for k, v in test.items() if k != "count"})
        log.line(
            f"test split, last checkpoint (step {step}): {_eval_summary(test)}; best "
            f"checkpoint (step {best_step}, by {selection} {t.best_metric}): "
            f"{_eval_summary(test_best)}"
        )
        if jax.process_index() == 0:
            log.line(f"training curves: {curves.write(workdir)}")
    except NonFinite as e:
        # A checkpoint is saved only once its step's metrics are fetched and finite, the
        # state included (`step_lib.STATE_FINITE`), so every saved state is finite. The
        # state of step s - 1 whose step s gives a NaN loss or gradient is finite but
        # useless (a resume repeats that step exactly, at any learning rate): it is moved
        # aside here, which costs nothing while training, where holding each state back
        # until the next step's loss is known would cost a second copy of it on the device.
        ckpts.wait()
        aside = ""
        if e.diverged and e.step - 1 in ckpts.latest.all_steps():
            moved = ckpts.set_aside_diverged(
                e.step - 1, f"step {e.step} from it gives a NaN/Inf loss or gradient"
            )
            aside = (
                f" Checkpoint {e.step - 1} leads to it at any learning rate: moved aside "
                f"to {moved}."
            )
        last = ckpts.last_good()  # issue 16: read back, verified and finite
        raise FloatingPointError(
            f"{e}{aside} Last good checkpoint: "
            + (f"step {last} in {ckpts.latest.directory}" if last else "none yet")
        ) from None
    finally:
        train_steps.close()
        sigterm.restore()
        log.close()
        ckpts.wait()
        ckpts.close()
    return state


def evaluate_checkpoint(
    config: ml_collections.ConfigDict | None, workdir: str, which: str = "best"
) -> dict:
    """`--mode eval`, holding the workdir's run lock (it writes into the workdir)."""
    with workdir_lib.RunLock(workdir, "--mode eval", create=False):  # issue 16
        return _evaluate_checkpoint(config, workdir, which)


def _evaluate_checkpoint(
    config: ml_collections.ConfigDict | None, workdir: str, which: str = "best"
) -> dict:
    """`--mode eval`: evaluate the best (or latest) checkpoint of `workdir` on the test split
    and write `<workdir>/eval_<which>.json` (the training's eval.json is left as it is).
    `config` defaults to the workdir's config.json; a workdir that does not exist is an
    error (it is never created)."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(
            f"--workdir {os.path.abspath(workdir)} does not exist "
            "(--mode eval never creates one: check the path)."
        )
    config = trained.read_config(workdir, config)
    parallel.initialize_distributed()
    run = Experiment(config)
    restored = restore.restore_workdir_variables(
        workdir, config, run.recipe.variable_shapes, run.mesh, which
    )
    if restored is None:
        raise FileNotFoundError(
            f"No checkpoint in {os.path.abspath(workdir)} "
            "(checkpoints/ or best/): train first with --mode train."
        )
    variables, step = restored
    metrics = step_lib.evaluate(
        run.recipe.eval_step(run.mesh), variables, run.eval_iterator(), run.mesh
    )
    path = os.path.join(workdir, f"eval_{which}.json")
    result = {
        "step": int(step),
        "checkpoint": which,
        "split": config.data.test_split,
        "metrics": metrics,
        "path": path,
    }
    _write_json(path, result)
    return result
