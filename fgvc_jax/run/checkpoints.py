"""Checkpoints in the workdir (orbax), checked.

Layout: `<workdir>/checkpoints/<step>` (periodic, the newest `keep` kept, resumed from
automatically) and `<workdir>/best/<step>` (the best evaluation so far by `best_metric`).
A checkpoint holds the whole train state (step, params, batch_stats, optimizer state); the
data iterator and every random stream are positioned from the step, so a resumed run ends
bitwise equal to an uninterrupted one.

Checked: each checkpoint records, in its orbax step metadata (`custom_metadata`), a SHA-256
digest of every top-level entry of the state it holds ('params', 'opt_state', ...), computed
from the arrays being saved. A restore compares the checkpoint's tree (names and shapes)
with the run's before reading anything (a checkpoint of another method or size is one
`Mismatch` naming the first differing array), then recomputes the digest of what it read. A
checkpoint that cannot be read or does not verify is damaged: the trainer moves it aside to
`<step>.damaged-<time>` (never deleted; orbax no longer sees it) and resumes from the newest
good one; the tools skip it without moving anything.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from fgvc_jax.run import orbax_errors
from fgvc_jax.run import workdir as workdir_lib
from fgvc_jax.run.orbax_errors import OrbaxErrors

#: orbax's errors (a failed write's tracebacks), in the workdir instead of the console.
ERRORS_LOG = "checkpoint_errors.log"
#: The key of our digest in orbax's step metadata (`custom_metadata`).
DIGEST_KEY = "sha256"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: one line naming it and why."""


class Damaged(CheckpointError):
    """The checkpoint at `folder` cannot be read, or what it holds is not what was
    written (`reason`)."""

    def __init__(self, folder: str, reason: str):
        super().__init__(f"checkpoint {folder} is damaged: {reason}")
        self.folder, self.reason = folder, reason


class WriteFailed(CheckpointError):
    """An (asynchronous) checkpoint write failed: full disk, permissions, a storage error."""


class Mismatch(CheckpointError, ValueError):
    """The checkpoint holds another model (method, size or number of classes)."""


def _key_name(key) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree) -> dict[str, Any]:
    """{'params/head/kernel': leaf, ...}: the same names for a TrainState, its orbax metadata
    and a restored dict (dataclass fields, dict keys and tuple indices all become names)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _local(leaf):
    """This process's full copy of `leaf` (a replicated array's first shard)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError("a sharded (not replicated) multi-process array")
        return leaf.addressable_shards[0].data
    return leaf


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(array).cast("B") if array.size else b"").hexdigest()


def digest(tree) -> dict[str, str]:
    """SHA-256 of each top-level entry of `tree` ('step', 'params', 'opt_state', ...) over
    its arrays' names, dtypes, shapes and bytes, in name order (so a TrainState and the dict
    orbax restores it as have the same digest). Leaves are hashed in threads (hashlib
    releases the GIL)."""
    flat = _flat(tree)
    names = sorted(flat)
    host = [np.ascontiguousarray(x) for x in jax.device_get([_local(flat[n]) for n in names])]
    workers = max(1, min(8, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        sums = list(pool.map(_sha, host))
    by_top: dict[str, Any] = {}
    for name, array, s in zip(names, host, sums):
        h = by_top.setdefault(name.split("/")[0], hashlib.sha256())
        h.update(f"{name}|{array.dtype.str}|{array.shape}|{s}\n".encode())
    return {top: h.hexdigest() for top, h in by_top.items()}


def _reason(e: BaseException) -> str:
    """One line of why: the storage layer's status (e.g. 'OUT_OF_RANGE: Error reading
    "params.w/0" ...') where the exception chain holds one, else the first line."""
    if isinstance(e, Damaged):
        return e.reason
    chain, x = [], e
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    lines = [(str(x).strip().splitlines() or [type(x).__name__])[0] for x in chain]
    line = next((t for t in lines if re.match(r"[A-Z_]{5,}: ", t)), lines[0])
    return line if len(line) <= 200 else line[:197] + "..."


@contextlib.contextmanager
def _quiet_read_errors():
    """orbax's reader coroutines left behind by a failed read print 'Exception ignored in'
    tracebacks when collected; the failure is reported once, by `_reason`."""
    previous = sys.unraisablehook

    def hook(info):
        text = str(info.exc_value)
        if "error while reading array" not in text and "Event loop is closed" not in text:
            previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def _is_damage(e: Exception) -> bool:
    """Read failures count as damage; running out of memory does not."""
    return not isinstance(e, MemoryError) and "RESOURCE_EXHAUSTED" not in str(e)


def stored_digest(folder: str) -> dict[str, str] | None:
    """The digest recorded in the checkpoint at `folder` (one step's folder); None for a
    checkpoint written before digests were kept. Damaged if orbax cannot read its step
    metadata (gone or corrupt)."""
    try:
        meta = ocp.metadata.get_step_metadata(folder)
    except (OSError, ValueError) as e:
        raise Damaged(folder, f"step metadata unreadable ({_reason(e)})") from None
    return (meta.custom_metadata or {}).get(DIGEST_KEY)


def verify(folder: str, restored) -> None:
    """Raise Damaged unless each top-level entry of `restored` has the recorded digest."""
    expected = stored_digest(folder)
    if expected is None:
        logging.warning(
            "checkpoint %s has no digest (written by an older version): not verified", folder
        )
        return
    for top, value in digest(restored).items():
        if top in expected and expected[top] != value:
            raise Damaged(folder, f"the {top} read differ from those written (digest mismatch)")
        if top not in expected:
            raise Damaged(folder, f"holds no digest of {top!r}")


def tree_metadata(folder: str) -> dict[str, tuple]:
    """{array name: shape} of the train state saved in `folder`, from orbax's metadata (no
    array is read). Damaged if the metadata cannot be read."""
    try:
        meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(folder) / "default")
        tree = getattr(meta, "tree", meta)
        flat = _flat(tree)
        if not flat:
            raise ValueError("no arrays in its metadata")
        return {k: tuple(v.shape) for k, v in flat.items()}
    except Exception as e:  # noqa: BLE001 - any read failure of the metadata is damage
        raise Damaged(folder, f"metadata unreadable ({_reason(e)})") from None


def _method_of(folder: str) -> str | None:
    """The method the workdir's recorded config names (None if it names none)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(folder)))
    try:
        config = workdir_lib.run_config(root)
    except workdir_lib.WorkdirError:
        return None
    return ((config or {}).get("method") or {}).get("name")


def check_fits(folder: str, target, method: str | None = None) -> None:
    """Raise Mismatch naming the first array whose name or shape differs between the
    checkpoint at `folder` and `target` (abstract arrays; only the top-level entries of
    `target` are compared, as a partial restore reads), with the method that wrote it (from
    the workdir's config) and `method`, the one expecting `target`."""
    saved = tree_metadata(folder)
    want = {k: tuple(v.shape) for k, v in _flat(target).items()}
    tops = {k.split("/")[0] for k in want}
    saved = {k: v for k, v in saved.items() if k.split("/")[0] in tops}
    for name in sorted(set(saved) | set(want)):
        if saved.get(name) != want.get(name):
            shape = lambda d: str(d[name]) if name in d else "absent"
            wrote = _method_of(folder)
            who = (
                f" (written by method {wrote!r}; this run is {method!r})"
                if wrote and method and wrote != method
                else f" (written by method {wrote!r})"
                if wrote
                else ""
            )
            raise Mismatch(
                f"checkpoint {folder} holds another model{who}: {name} is "
                f"{shape(saved)} in the checkpoint, {shape(want)} in this run."
            )


def _checked_read(folder: str, target: Any, method: str | None, restore) -> Any:
    """`restore(<folder>/default)` between `check_fits` (naming `method` in a mismatch) and
    `verify`; Damaged when it cannot be read or verified."""
    check_fits(folder, target, method)
    try:
        with _quiet_read_errors():
            restored = restore(os.path.join(os.path.abspath(folder), "default"))
    except Exception as e:  # noqa: BLE001
        if not _is_damage(e):
            raise
        raise Damaged(folder, f"cannot be read ({_reason(e)})") from None
    verify(folder, restored)
    return restored


def read_variables(folder: str, target: dict, method: str | None = None) -> dict:
    """Partial restore of the top-level entries of `target` (abstract arrays with their
    shardings, e.g. {'params', 'batch_stats'}) from the checkpoint at `folder`, checked
    (`check_fits`, naming `method` in a mismatch) and verified (`verify`). Damaged when it
    cannot be read or verified."""
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)

    def restore(path):
        with ocp.PyTreeCheckpointer() as ckptr:
            return ckptr.restore(
                path,
                args=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                ),
            )

    return _checked_read(folder, target, method, restore)


def _read_all(folder: str) -> None:
    """Read every array of the checkpoint at `folder` to host memory, verify it and check
    that it is finite (Damaged otherwise)."""
    tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(folder) / "default")
    tree = getattr(tree, "tree", tree)
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    with _quiet_read_errors(), ocp.PyTreeCheckpointer() as ckptr:
        restored = ckptr.restore(
            os.path.join(folder, "default"),
            args=ocp.args.PyTreeRestore(item=tree, restore_args=args),
        )
    verify(folder, restored)
    bad = sum(
        int(np.size(x) - np.isfinite(x).sum())
        for x in jax.tree.leaves(restored)
        if np.issubdtype(np.asarray(x).dtype, np.inexact)
    )
    if bad:
        raise Damaged(folder, f"holds {bad:,} non-finite values")


def _move_aside(folder: str, label: str) -> str:
    """Rename `folder` to `<folder>.<label>-<time>` (process 0; nothing is deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{folder}.{label}-{stamp}"
    if jax.process_index() == 0:
        n = 1
        while os.path.exists(aside):
            n += 1
            aside = f"{folder}.{label}-{stamp}-{n}"
        os.rename(folder, aside)
    return aside


def _synced(mgr) -> None:
    """Every process past the renames, then `mgr` re-lists its steps."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("fgvc_jax:checkpoints_set_aside")
    mgr.reload()


def has_checkpoints(workdir: str) -> bool:
    """Whether `<workdir>/checkpoints` holds a finished periodic checkpoint (no orbax)."""
    return latest_finished_step(workdir) is not None


def latest_finished_step(workdir: str) -> int | None:
    """The step of the newest finished periodic checkpoint (orbax renames a checkpoint to its
    step only when it is complete), None if there is none; no orbax, no collective."""
    d = epath.Path(workdir) / "checkpoints"
    steps = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
    return max(steps, default=None)


def resume_source(source: str) -> str:
    """The absolute step folder `config.init.resume_from` names (<workdir>/checkpoints/<step>
    or <workdir>/best/<step> of another run); FileNotFoundError or ValueError, naming the
    steps there when it is a workdir or its checkpoints/ folder."""
    what = f"config.init.resume_from={source!r}"
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what}: no such directory.")
    if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "default")):
        return path
    parent = os.path.join(path, "checkpoints") if has_checkpoints(path) else path
    steps = sorted(int(d) for d in os.listdir(parent) if d.isdigit())
    hint = (
        f"; e.g. {os.path.join(parent, str(steps[-1]))} (steps there: {', '.join(map(str, steps))})"
        if steps
        else ""
    )
    raise ValueError(
        f"{what} is not a checkpoint: give a step folder <workdir>/checkpoints/<step>{hint}."
    )


def read_state(folder: str, abstract_state: Any, method: str | None = None) -> tuple[Any, int]:
    """(state, step): the whole train state saved in the step folder `folder` (another
    run's checkpoint, `config.init.resume_from`), placed with the shardings of
    `abstract_state`, checked (`check_fits`) and verified (`verify`) as a resume is."""

    def restore(path):
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path, abstract_state)

    state = _checked_read(folder, abstract_state, method, restore)
    return state, int(os.path.basename(folder))


class Checkpoints:
    """The periodic and best-by-accuracy checkpoint managers of one workdir. `method` names
    the run's method in the message of a checkpoint of another model."""

    def __init__(
        self,
        workdir: str,
        *,
        keep: int = 3,
        best_metric: str = "top1/combined",
        method: str | None = None,
    ):
        root = epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))
        self.best_metric, self.method = best_metric, method
        policies = ocp.checkpoint_managers
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.LatestN(n=keep), create=True
            ),
        )
        best_fn = lambda m: m[best_metric]
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                # the one highest `best_metric` (sorted ascending, the last kept); orbax
                # 0.12.8 writes a step's metrics only when `best_fn` is set
                preservation_policy=policies.BestN(get_metric_fn=best_fn, reverse=False, n=1),
                best_fn=best_fn,
                best_mode="max",
                create=True,
            ),
        )

        self._best = self._read_best_value()
        self._errors = OrbaxErrors(os.path.join(str(root), ERRORS_LOG))
        self._saved: tuple[str, int] | None = None  # (folder of the manager, step) last saved

    def check(self) -> None:
        """WriteFailed if an asynchronous save failed (no wait; after every step)."""
        if self._errors.first is not None:
            folder, step = self._saved or (str(self.latest.directory), -1)
            why = orbax_errors.reason(self._errors.first)
            raise WriteFailed(
                f"could not write checkpoint {step} to {folder}: {why} (orbax's messages in "
                f"{self._errors.path}). The earlier checkpoints are kept."
            )

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def _manager(self, which: str):
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint {which!r}; valid: latest, best")
        return self.latest if which == "latest" else self.best

    @staticmethod
    def _folder(mgr, step: int) -> str:
        return str(mgr.directory / str(step))

    def _read_best_value(self) -> float:
        step = self.best.latest_step()
        metrics = (self.best.metrics(step) or {}) if step is not None else {}
        return float(metrics.get(self.best_metric, -float("inf")))

    def best_value(self) -> float:
        """Best `best_metric` saved so far in this workdir (-inf if none)."""
        return self._best

    def save(self, step: int, state: Any) -> None:
        """Periodic checkpoint of `state` at `step` with its digest (asynchronous; `wait` to
        finish)."""
        self.check()
        self._saved = (str(self.latest.directory), step)
        self._errors.armed = True
        self.latest.save(
            step,
            args=ocp.args.StandardSave(state),
            force=True,
            custom_metadata={DIGEST_KEY: digest(state)},
        )

    def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> bool:
        """Save `state` as the best checkpoint when `metrics[best_metric]` improved."""
        value = float(metrics[self.best_metric])
        if value <= self._best:
            return False
        self.check()
        self._saved = (str(self.best.directory), step)
        self._errors.armed = True
        self.best.save(
            step,
            args=ocp.args.StandardSave(state),
            metrics={k: float(v) for k, v in metrics.items()},
            force=True,
            custom_metadata={DIGEST_KEY: digest(state)},
        )
        self._best = value
        return True

    def restore(self, abstract_state: Any, which: str = "latest") -> tuple[Any, int] | None:
        """(state, step) from the newest good periodic ('latest') or best ('best')
        checkpoint, placed with the shardings of `abstract_state`; None if there is none.

        Newer checkpoints that cannot be read or verified are moved aside (named in a
        warning). Mismatch if the newest one holds another model; Damaged, with nothing
        moved, if none can be read (a fault of this machine rather than of the files)."""
        mgr = self._manager(which)
        failed: list[tuple[int, str]] = []
        for step in sorted(mgr.all_steps(), reverse=True):
            folder = self._folder(mgr, step)
            try:
                check_fits(folder, abstract_state, self.method)
                with _quiet_read_errors():
                    state = mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
                verify(folder, state)
            except Mismatch:
                raise
            except Exception as e:  # noqa: BLE001 - a read failure: try the previous one
                if not _is_damage(e):
                    raise
                failed.append((step, _reason(e)))
                continue
            self._set_aside(mgr, failed, f"resuming from step {step}")
            return state, step
        if failed:
            raise CheckpointError(
                f"no checkpoint in {mgr.directory} can be read (nothing moved): "
                + "; ".join(f"step {s}: {r}" for s, r in failed)
            )
        return None

    def last_good(self) -> int | None:
        """The newest periodic checkpoint that reads, verifies and is finite (newer ones are
        moved aside as damaged); None if none does. Reads whole checkpoints: for the NaN
        message."""
        failed: list[tuple[int, str]] = []
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                _read_all(self._folder(self.latest, step))
            except Exception as e:  # noqa: BLE001
                failed.append((step, _reason(e)))
                continue
            self._set_aside(self.latest, failed, f"the last good one is step {step}")
            return step
        return None

    def _set_aside(self, mgr, failed: list[tuple[int, str]], then: str) -> None:
        """Rename each failed step's folder to `<step>.damaged-<time>` (process 0), so that
        orbax no longer lists it; nothing is deleted."""
        if not failed:
            return
        for step, reason in failed:
            folder = self._folder(mgr, step)
            aside = _move_aside(folder, "damaged")
            logging.warning(
                "Checkpoint %s is damaged (%s): moved aside to %s; %s.", folder, reason, aside, then
            )
        _synced(mgr)

    def set_aside_diverged(self, step: int, reason: str) -> str:
        """Move periodic checkpoint `step` (finite, but its next step gives a NaN/Inf loss
        or gradient) to `<step>.diverged-<time>`; returns that folder."""
        folder = self._folder(self.latest, step)
        aside = _move_aside(folder, "diverged")
        logging.warning("Checkpoint %s: %s; moved aside to %s.", folder, reason, aside)
        _synced(self.latest)
        return aside

    def candidates(self, which: str = "best") -> list[tuple[str, int]]:
        """(folder, step) of every checkpoint `find` may return, newest first: 'best' then
        'latest' for 'best'. The tools try them in order, skipping damaged ones."""
        mgrs = [self.best, self.latest] if which == "best" else [self._manager(which)]
        return [(self._folder(m, s), s) for m in mgrs for s in sorted(m.all_steps(), reverse=True)]

    def find(self, which: str = "best") -> tuple[str, int] | None:
        """(folder, step) of the best or latest checkpoint; 'best' falls back to 'latest' (a
        run not yet evaluated has no best); None if there is none. For restoring the
        variables alone (`run.restore.restore_variables`)."""
        found = self.candidates(which)
        return found[0] if found else None

    def wait(self) -> None:
        """Until the asynchronous saves are written; WriteFailed if one failed."""
        try:
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax re-raises the write's error
            self._errors.first = self._errors.first or e
        self.check()
        self._errors.armed = False  # written: later orbax errors are of reads

    def close(self) -> None:
        try:
            self.latest.close()
            self.best.close()
        except Exception as e:  # noqa: BLE001
            self._errors.first = self._errors.first or e
        finally:
            self._errors.close()
