"""Fault injection through the real CLI (`python -m fgvc_jax.main`) on a tiny synthetic run:
damaged checkpoints of every kind, SIGKILLs while checkpoints are written, two trainers on
one workdir. Every check compares with an uninterrupted run: the parameters must be bitwise
equal.

    python -m tests.fault_injection                 # everything (a few minutes on a laptop)
    python -m tests.fault_injection --kinds byte --kills 1 --out /tmp/fi

The test suite runs a small part of it (tests/train/test_fault_injection.py).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from tests.train import cli

KINDS = ("truncate", "zero", "delete_data", "delete_manifest", "delete_metadata", "byte")
STEPS, EVERY = 12, 4  # checkpoints at 4, 8 and 12


def corrupt(folder: str, kind: str) -> str:
    """Damage the checkpoint at `folder` (one step's folder) as `kind`; returns the file.

    truncate / zero / delete_data: the largest array data file cut to half, overwritten by
    zeros, removed; delete_manifest / delete_metadata: orbax's `manifest.ocdbt` / `_METADATA`
    removed; byte: one byte in the middle of the largest data file changed."""
    data = glob.glob(os.path.join(folder, "default", "**", "d", "*"), recursive=True)
    big = max(data, key=os.path.getsize)
    if kind == "truncate":
        with open(big, "r+b") as f:
            f.truncate(os.path.getsize(big) // 2)
    elif kind == "zero":
        size = os.path.getsize(big)
        with open(big, "wb") as f:
            f.write(bytes(size))
    elif kind == "delete_data":
        os.remove(big)
    elif kind in ("delete_manifest", "delete_metadata"):
        big = os.path.join(
            folder, "default", "manifest.ocdbt" if kind == "delete_manifest" else "_METADATA"
        )
        os.remove(big)
    elif kind == "byte":
        at = os.path.getsize(big) // 2
        with open(big, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x10]))
    else:
        raise ValueError(f"kind {kind!r}; valid: {', '.join(KINDS)}")
    return big


def steps(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def params(workdir, step: int) -> list[np.ndarray]:
    import jax
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.path.join(workdir, "checkpoints", str(step), "default"))
    tree = ocp.StandardCheckpointer().restore(path)
    return [
        np.asarray(x)
        for x in jax.tree.leaves((tree["params"], tree["batch_stats"], tree["opt_state"]))
    ]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))


class Runs:
    """Tiny runs of one config in folders under `root`, sharing one dataset and one JAX
    compilation cache (the results do not depend on it)."""

    def __init__(self, root: str, method: str = "baseline_resnet"):
        self.root, self.method = root, method
        self.data_dir = os.path.join(root, "tfds")
        self.env = dict(
            JAX_COMPILATION_CACHE_DIR=os.path.join(root, "jax_cache"),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )

    def args(self, workdir, *extra) -> list[str]:
        return cli.tiny_args(
            self.method,
            workdir,
            self.data_dir,
            f"--config.train.num_steps={STEPS}",
            f"--config.train.checkpoint_every={EVERY}",
            "--config.optim.warmup_steps=2",
            *extra,
        )

    def run(self, workdir, *extra, timeout=400) -> subprocess.CompletedProcess:
        return cli.run(self.args(workdir, *extra), timeout=timeout, **self.env)

    def start(self, workdir, *extra) -> subprocess.Popen:
        return subprocess.Popen(
            self.args(workdir, *extra),
            cwd=cli.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env(**self.env),
        )

    def reference(self) -> str:
        """The uninterrupted run (made once)."""
        w = os.path.join(self.root, "reference")
        if not os.path.exists(os.path.join(w, "eval.json")):
            out = self.run(w)
            _ok(out.returncode == 0, "reference run", out.stderr)
        return w

    def interrupted(self, name: str) -> str:
        """A copy of the reference run as if it had been killed after its step-8 checkpoint."""
        w = os.path.join(self.root, name)
        shutil.rmtree(w, ignore_errors=True)
        shutil.copytree(self.reference(), w)
        shutil.rmtree(os.path.join(w, "checkpoints", str(STEPS)))
        os.remove(os.path.join(w, "eval.json"))
        return w


class Failure(AssertionError):
    pass


def _ok(condition: bool, what: str, log: str = "") -> None:
    if not condition:
        raise Failure(f"{what}\n{log[-4000:]}")


def damaged_checkpoint(runs: Runs, kind: str) -> str:
    """The latest checkpoint (8) damaged as `kind`: the run moves it aside, resumes from 4
    and ends with the uninterrupted run's parameters."""
    w = runs.interrupted(f"damaged_{kind}")
    corrupt(os.path.join(w, "checkpoints", "8"), kind)
    out = runs.run(w)
    _ok(out.returncode == 0, f"{kind}: the resumed run failed", out.stderr)
    aside = glob.glob(os.path.join(w, "checkpoints", "8.damaged-*"))
    _ok(len(aside) == 1, f"{kind}: checkpoint 8 not moved aside", out.stderr)
    _ok(
        re.search(
            r"Checkpoint \S+/checkpoints/8 is damaged \(.+\): moved aside to "
            r"\S+/8\.damaged-",
            out.stderr,
        )
        is not None,
        f"{kind}: no message",
        out.stderr,
    )
    _ok("at step 4" in out.stderr, f"{kind}: did not resume from step 4", out.stderr)
    _ok("Traceback" not in out.stderr, f"{kind}: a traceback", out.stderr)
    _ok(
        same(params(w, STEPS), params(runs.reference(), STEPS)),
        f"{kind}: parameters differ from the uninterrupted run's",
    )
    return f"{kind}: moved aside, resumed from step 4, parameters equal"


def two_trainers(runs: Runs) -> str:
    """A second trainer (another seed) and `--mode eval` on a workdir in use fail within
    seconds naming the holder; the first run ends with the uninterrupted run's parameters."""
    w = os.path.join(runs.root, "two_trainers")
    shutil.rmtree(w, ignore_errors=True)
    first = runs.start(w)
    lock = os.path.join(w, "run.lock")
    t0 = time.time()
    while not os.path.exists(lock):
        _ok(
            first.poll() is None,
            "the first trainer ended early",
            first.stderr.read() if first.poll() is not None else "",
        )
        _ok(time.time() - t0 < 120, "the first trainer took no lock")
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # it holds the lock, alive, for as long as we need
    try:
        config_json = (
            open(os.path.join(w, "config.json")).read()
            if os.path.exists(os.path.join(w, "config.json"))
            else None
        )
        results = []
        for extra in (("--config.seed=1",), ("--mode", "eval", "--checkpoint", "latest")):
            t = time.time()
            out = runs.run(w, *extra, timeout=120)
            results.append((time.time() - t, out))
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=400)
    _ok(first.returncode == 0, "the first trainer failed", err)
    for (seconds, out), who in zip(results, ("second trainer", "--mode eval")):
        _ok(out.returncode == 2, f"{who} did not fail", out.stderr)
        _ok(
            f"is in use by train (PID {first.pid} on host" in out.stderr,
            f"{who}: the holder is not named",
            out.stderr,
        )
        _ok(seconds < 60, f"{who} took {seconds:.0f} s to fail")
        _ok("Traceback" not in out.stderr, f"{who}: a traceback", out.stderr)
    _ok(
        same(params(w, STEPS), params(runs.reference(), STEPS)),
        "the first run's parameters differ from the uninterrupted run's",
    )
    history = os.listdir(os.path.join(w, "config_history"))
    _ok(history == ["1.json"], f"other starts were recorded: {history}")
    if config_json is not None:
        _ok(open(os.path.join(w, "config.json")).read() == config_json, "config.json changed")
    _ok(not os.path.exists(lock), "the lock is left behind")
    return (
        f"second trainer and --mode eval failed in {results[0][0]:.1f} s and "
        f"{results[1][0]:.1f} s naming PID {first.pid}; the first run's parameters equal"
    )


def kills_during_writes(runs: Runs, kills: int) -> str:
    """A run that checkpoints every step, SIGKILLed `kills` times just after a checkpoint
    appears (the next one is being written), then run to the end: the uninterrupted run's
    parameters (the lock of each killed run is taken over)."""
    w = os.path.join(runs.root, "kills")
    shutil.rmtree(w, ignore_errors=True)
    killed_at = []
    for _ in range(kills):
        proc = runs.start(w, "--config.train.checkpoint_every=1")
        before = max(steps(w), default=0)
        t0 = time.time()
        while max(steps(w), default=0) <= before:
            if proc.poll() is not None:
                raise Failure("the run ended before it could be killed\n" + proc.stderr.read())
            _ok(time.time() - t0 < 300, "no checkpoint in time")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(max(steps(w)))
        if killed_at[-1] >= STEPS - 1:
            break
    out = runs.run(w, "--config.train.checkpoint_every=1")
    _ok(out.returncode == 0, "the last start failed", out.stderr)
    _ok("took over the lock" in out.stderr, "the stale lock was not taken over", out.stderr)
    _ok(
        same(params(w, STEPS), params(runs.reference(), STEPS)),
        "parameters differ from the uninterrupted run's",
    )
    return f"killed after checkpoints {killed_at}; resumed; parameters equal"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="", help="folder for the runs (default: a temporary one)")
    p.add_argument("--kinds", default="all", help=f"damage kinds: all or some of {KINDS}")
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs during checkpoint writes")
    a = p.parse_args(argv)
    root = a.out or tempfile.mkdtemp(prefix="fgvc_fault_injection_")
    runs = Runs(root)
    kinds = KINDS if a.kinds == "all" else tuple(a.kinds.split(","))
    checks = [(f"damaged checkpoint ({k})", lambda k=k: damaged_checkpoint(runs, k)) for k in kinds]
    checks += [("two trainers", lambda: two_trainers(runs))]
    if a.kills:
        checks += [("kills during writes", lambda: kills_during_writes(runs, a.kills))]
    failed = 0
    for name, check in checks:
        try:
            print(f"PASS {name}: {check()}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
    print(f"{len(checks) - failed}/{len(checks)} passed (runs in {root})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
