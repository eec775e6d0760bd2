"""One run per workdir, and the record of how each start of it was configured.

The run lock `<workdir>/run.lock` is taken by the trainer and `--mode eval` (process 0 of a
multi-process run) and removed when they end. It records the holder's host, PID, mode,
start time and command. A second trainer or `--mode eval` on the workdir stops at once
naming the holder. A lock whose process is gone (same host: the PID no longer runs, or runs
another program) is taken over with a warning; a lock of another host is never taken over
(its liveness cannot be checked): the message says which file to delete. The read-only tools
(evaluate, predict, explain) take no lock.

The config record: `<workdir>/config.json` is the config of the run's first start and is kept;
every start (the first included) is added to `<workdir>/config_history/<n>.json` with the
step it started from and the keys it changed. Resuming with a config that differs from the
latest start's stops with the list of changed keys, unless the change is accepted
(`--allow_config_change`). Keys that only say where files are or how often to log or save
(`IGNORED`) never change what is computed: they may differ on resume. A start with another
method is refused outright (its checkpoint cannot be read): it needs a new workdir. The
trainer checks a start (`check_start`) and records it (`Start.record`) only once its
checkpoint was read, so a refused start leaves the record as it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from fgvc_jax.runtime import processes

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.json"
HISTORY_DIR = "config_history"
#: Config keys that may differ on resume without --allow_config_change.
IGNORED = (
    "data.data_dir",
    "data.manual_dir",
    "data.num_workers",
    "data.prefetch",
    "data.verify_cache",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep",
    "train.profile_steps",
)


_ABSENT = "(absent)"


class WorkdirError(Exception):
    """The workdir cannot be used as asked: one line naming it and why."""


class WorkdirInUse(WorkdirError):
    """Another run holds the workdir's lock."""


class ConfigChanged(WorkdirError):
    """Resuming with a config that differs from the run's."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


def _why(e: OSError) -> str:
    return {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
    }.get(e.errno, e.strerror or str(e))


def create(workdir: str) -> str:
    """Make `workdir` (and its parents) and check it is a writable folder; WorkdirError
    naming it and why otherwise."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"workdir {path} is a file, not a folder: choose another --workdir.")
    parent = path
    while parent != os.path.dirname(parent) and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise WorkdirError(f"workdir {path} cannot be created: {parent} is a file.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except OSError as e:
        verb = "is not writable" if os.path.isdir(path) else "cannot be created"
        raise WorkdirError(
            f"workdir {path} {verb}: {_why(e)}"
            + (f" ({e.filename})" if e.filename and e.filename != path else "")
            + "."
        ) from None
    return path


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): a PID
    reused by another program has another one. None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (on this host; other hosts: assumed alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    if not processes.alive(pid):
        return False
    started = _start_time(pid)
    return not (started and holder.get("proc_start") and started != holder["proc_start"])


def _read_lock(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"host": "?", "pid": -1, "unreadable": True}


def _describe(holder: dict) -> str:
    return (
        f"{holder.get('mode', 'a run')} (PID {holder.get('pid')} on host "
        f"{holder.get('host')}, since {holder.get('started', '?')})"
    )


class RunLock:
    """`with RunLock(workdir, mode):` holds `<workdir>/run.lock` for the block (process 0;
    the others learn whether it was taken). `create`: make the workdir if needed (the
    trainer); otherwise a workdir that does not exist is left to the caller to report."""

    def __init__(self, workdir: str, mode: str, *, create: bool = True):
        self.workdir, self.mode, self.create = workdir, mode, create
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self.token = uuid.uuid4().hex
        self.held = False

    def __enter__(self) -> RunLock:
        error = None
        if jax.process_index() == 0:
            try:
                self._acquire()
            except WorkdirError as e:
                error = e
        if jax.process_count() > 1:
            ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
            if not ok and error is None:
                error = WorkdirInUse(
                    f"workdir {os.path.abspath(self.workdir)} could not be "
                    "locked by process 0 (see its message)."
                )
        if error is not None:
            raise error
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _record(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.mode,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": self.token,
            "proc_start": _start_time(os.getpid()),
            "command": " ".join(sys.argv),
        }

    def _acquire(self) -> None:
        if "://" in str(self.workdir):
            logging.warning(
                "workdir %s: no run lock on remote file systems; make sure no other run uses it.",
                self.workdir,
            )
            return
        if self.create:
            create(self.workdir)
        elif not os.path.isdir(self.workdir):
            return  # the caller reports the missing workdir
        tmp = f"{self.path}.{self.token}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self._record(), f)
        except OSError as e:
            raise WorkdirError(
                f"workdir {os.path.abspath(self.workdir)} is not writable: {_why(e)}."
            ) from None
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists
                    self.held = True
                    return
                except FileExistsError:
                    pass
                holder = _read_lock(self.path)
                if holder is None:
                    continue  # released meanwhile
                if holder.get("unreadable"):
                    time.sleep(0.2)  # being written by a process that has not finished
                    holder = _read_lock(self.path) or holder
                if _alive(holder) and not holder.get("unreadable"):
                    raise WorkdirInUse(
                        f"workdir {os.path.abspath(self.workdir)} is in use by "
                        f"{_describe(holder)}: one run per workdir. Wait for it to end or "
                        f"choose another --workdir; if that process is gone, delete "
                        f"{self.path}."
                    )
                if self._take_over(tmp, holder):
                    return
            raise WorkdirInUse(
                f"workdir {os.path.abspath(self.workdir)}: could not take "
                f"{self.path} (other processes are taking it)."
            )
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _take_over(self, tmp: str, holder: dict) -> bool:
        """Replace a stale lock by ours, under a short flock so that two starts cannot both
        take it over."""
        with open(self.path + ".guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if _read_lock(self.path) != holder:
                    return False  # changed meanwhile: look again
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        self.held = True
        what = (
            "an unreadable lock"
            if holder.get("unreadable")
            else f"the lock of {_describe(holder)}, which is no longer running"
        )
        logging.warning("workdir %s: took over %s.", os.path.abspath(self.workdir), what)
        print(f"note: took over {what} ({self.path}).", file=sys.stderr, flush=True)
        return True

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if not self.held:
            return
        self.held = False
        holder = _read_lock(self.path)
        if holder is not None and holder.get("token") == self.token:
            os.remove(self.path)


# ----------------------------------------------------------------------------------------
# The config record


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader sees the old or
    the new content, never a part."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except ValueError as e:
        raise WorkdirError(
            f"{path} is corrupt ({e}): restore it from config_history/ or pass the run's --config."
        ) from None
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read: {_why(e)}.") from None
    if not isinstance(value, dict):
        raise WorkdirError(f"{path} is corrupt (not a JSON object).")
    return value


def _history(workdir: str) -> list[str]:
    d = os.path.join(workdir, HISTORY_DIR)
    if not os.path.isdir(d):
        return []
    names = sorted(
        (n for n in os.listdir(d) if n.endswith(".json") and n[:-5].isdigit()),
        key=lambda n: int(n[:-5]),
    )
    return [os.path.join(d, n) for n in names]


def _entry_config(path: str) -> dict:
    entry = _load(path)
    if not isinstance(entry.get("config"), dict):
        raise WorkdirError(f"{path} is corrupt (no 'config' in it).")
    return entry["config"]


def run_config(workdir: str) -> dict | None:
    """The run's config as a dict: `config.json`, or, once a start accepted a change
    (`--allow_config_change`), the latest start's; None if the workdir records none.
    WorkdirError naming the file if it is corrupt."""
    if "://" in str(workdir):
        return None
    history = _history(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    if history and (not os.path.exists(path) or any(_load(h).get("accepted") for h in history)):
        return _entry_config(history[-1])
    return _load(path) if os.path.exists(path) else None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(old: dict, new: dict) -> dict[str, tuple]:
    """{key: (old value, new value)} of every differing leaf ('(absent)' where missing)."""
    a, b = _flatten(old), _flatten(new)
    missing = _ABSENT
    return {
        k: (a.get(k, missing), b.get(k, missing))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    }


def _listing(changes: dict[str, tuple], limit: int = 12) -> str:
    items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    more = len(items) - limit
    return "; ".join(items[:limit]) + (f"; and {more} more" if more > 0 else "")


class Start:
    """A start that `check_start` accepted; `record()` adds it to the config record."""

    def __init__(self, workdir, config, resuming, previous, changes, blocking):
        self.workdir, self.config, self.resuming = workdir, config, resuming
        self.previous, self.changes, self.accepted = previous, changes, blocking

    def record(self) -> None:
        """Write `config_history/<n>.json` (and `config.json` on a first start); process 0."""
        if "://" in str(self.workdir) or jax.process_index() != 0:
            return
        root = os.path.abspath(self.workdir)
        history = _history(root)
        os.makedirs(os.path.join(root, HISTORY_DIR), exist_ok=True)
        if not history and self.previous is not None:  # from before the history was kept
            write_atomic(
                os.path.join(root, HISTORY_DIR, "0.json"),
                json.dumps(
                    {
                        "start": 0,
                        "note": f"the {CONFIG_FILE} found before config_history/ was kept",
                        "config": self.previous,
                    },
                    indent=2,
                ),
            )
            history = ["0.json"]
        n = max(int(os.path.basename(h)[:-5]) for h in history) + 1 if history else 1
        entry = {
            "start": n,
            "resuming": bool(self.resuming),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": " ".join(sys.argv),
            "changed": sorted(self.changes),
            "accepted": sorted(self.accepted) if self.resuming else [],
            "config": json.loads(self.config.to_json()),
        }
        write_atomic(os.path.join(root, HISTORY_DIR, f"{n}.json"), json.dumps(entry, indent=2))
        config_json = os.path.join(root, CONFIG_FILE)
        if not self.resuming or not os.path.exists(config_json):
            write_atomic(config_json, self.config.to_json(indent=2))


def check_start(workdir: str, config, *, resuming: bool, allow_change: bool = False) -> Start:
    """Check `config` (a ConfigDict) against the run's latest recorded config; nothing is
    written (`Start.record` does). `resuming`: the workdir has a checkpoint to continue from.
    WorkdirError if the method differs (a new workdir is needed); ConfigChanged listing the
    changed keys unless `allow_change`."""
    if "://" in str(workdir):
        logging.warning("workdir %s: the config record needs a local file system.", workdir)
        return Start(workdir, config, resuming, None, {}, {})
    new = json.loads(config.to_json())
    previous = run_config(workdir)
    changes = changed_keys(previous, new) if previous is not None else {}
    theirs = ((previous or {}).get("method") or {}).get("name")
    ours = new.get("method", {}).get("name")
    if resuming and theirs and theirs != ours:
        raise WorkdirError(
            f"workdir {os.path.abspath(workdir)} holds a {theirs!r} run and this config is "
            f"{ours!r}: a run cannot change its method. Start it in a new --workdir."
        )
    # A key only one side has comes from another version of the library (--config.* cannot
    # add or remove keys): listed, not blocking.
    versions = {k: v for k, v in changes.items() if _ABSENT in v}
    blocking = {k: v for k, v in changes.items() if k not in IGNORED and k not in versions}
    if resuming and versions:
        logging.warning(
            "Config keys added or removed since the last start (another version of fgvc_jax): %s",
            _listing(versions, 50),
        )
    if resuming and blocking and not allow_change:
        raise ConfigChanged(
            f"workdir {os.path.abspath(workdir)} was trained with another config; changed: "
            f"{_listing(blocking)}. Resume with the run's config (see {CONFIG_FILE} and "
            f"{HISTORY_DIR}/), choose another --workdir, or pass --allow_config_change to "
            "continue with the new one.",
            list(blocking),
        )
    if resuming and blocking:
        logging.warning(
            "Config changed since the last start, accepted by --allow_config_change: %s",
            _listing(blocking, 50),
        )
        for key in ("train.num_steps", "train.num_epochs"):
            if key in blocking:
                logging.warning(
                    "%s %r -> %r: the learning-rate schedule is rebuilt for the new "
                    "length and continues at the resumed step.",
                    key,
                    *blocking[key],
                )
    return Start(workdir, config, resuming, previous, changes, blocking)


def record_start(
    workdir: str, config, *, resuming: bool, allow_change: bool = False
) -> dict[str, tuple]:
    """`check_start` and `Start.record` at once; returns the accepted changes.

    A start from step 0 (nothing to resume) is a new first start: it writes config.json."""
    start = check_start(workdir, config, resuming=resuming, allow_change=allow_change)
    start.record()
    return start.accepted


def check_length(start_step: int, num_steps: int, workdir: str) -> None:
    """A run resumed past its (changed) end trains nothing: say so instead of exiting 0."""
    if start_step > num_steps:
        raise WorkdirError(
            f"workdir {os.path.abspath(workdir)} resumes at step {start_step}, past the new "
            f"length of {num_steps} steps: nothing to train. Evaluate it with --mode eval, or "
            "set train.num_steps/num_epochs beyond the resumed step."
        )
