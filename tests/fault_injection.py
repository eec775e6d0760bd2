"""Fault injection through the real CLI (`python -m fgvc_jax.main`) on a tiny synthetic run:
damaged checkpoints of every kind, a damaged decoded cache, SIGKILLs while checkpoints are
written, two trainers on one workdir. Every check compares with an uninterrupted run: the parameters must be bitwise
equal.

    python -m tests.fault_injection                 # everything (a few minutes on a laptop)
    python -m tests.fault_injection --kinds byte --kills 1 --out /tmp/fi

The test suite runs a small part of it (tests/train/test_fault_injection.py).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
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


CACHE_DAMAGE = ("flip", "truncate", "delete")


def damaged_cache(runs: Runs, kind: str) -> str:
    """The training split's decoded cache damaged as `kind` (one byte changed, cut to half,
    removed) in a copy of the reference run's data_dir: a new run names the file, rebuilds
    the cache and ends with the uninterrupted run's parameters."""
    runs.reference()
    data_dir = os.path.join(runs.root, f"tfds_cache_{kind}")
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(runs.data_dir, data_dir)
    (images,) = glob.glob(
        os.path.join(data_dir, "**", "decoded", "train_*", "images.npy"), recursive=True
    )
    size = os.path.getsize(images)
    if kind == "flip":
        with open(images, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x10]))
    elif kind == "truncate":
        os.truncate(images, size // 2)
    elif kind == "delete":
        os.remove(images)
    else:
        raise ValueError(f"kind {kind!r}; valid: {', '.join(CACHE_DAMAGE)}")
    w = os.path.join(runs.root, f"cache_{kind}")
    shutil.rmtree(w, ignore_errors=True)
    out = runs.run(w, f"--config.data.data_dir={data_dir}")
    _ok(out.returncode == 0, f"cache {kind}: the run failed", out.stderr)
    named = re.findall(
        rf"Decoded cache damaged: {re.escape(images)} .*; rebuilding it\.", out.stderr
    )
    _ok(len(named) == 1, f"cache {kind}: the damaged file is not named once", out.stderr)
    _ok("Traceback" not in out.stderr, f"cache {kind}: a traceback", out.stderr)
    _ok(
        same(params(w, STEPS), params(runs.reference(), STEPS)),
        f"cache {kind}: parameters differ from the uninterrupted run's",
    )
    return f"{kind}: named, rebuilt, parameters equal"


def _finite(workdir, step: int) -> bool:
    return all(np.isfinite(x).all() for x in params(workdir, step) if x.dtype.kind == "f")


def _lr(lr: float) -> tuple[str, ...]:
    return (f"--config.optim.lr.backbone={lr}", f"--config.optim.lr.new={lr}")


def diverged(runs: Runs, lr: float, resume: bool) -> str:
    """A run at learning rate `lr` without warm-up, checkpointing every step, from scratch
    or (`resume`) from the reference run's checkpoint 8: it stops with one line naming a
    last good checkpoint that holds only finite values (none saved after it), and training
    on from it at lr 1e-3 ends finite."""
    name = f"diverged_{lr:g}" + ("_resumed" if resume else "")
    if resume:
        w = runs.interrupted(name)
        shutil.rmtree(os.path.join(w, "checkpoints", "4"))
    else:
        w = os.path.join(runs.root, name)
        shutil.rmtree(w, ignore_errors=True)
    every = ("--config.optim.warmup_steps=0", "--config.train.checkpoint_every=1")
    out = runs.run(w, *every, *_lr(lr), "--allow_config_change")
    _ok(out.returncode == 2 and "Traceback" not in out.stderr, f"lr {lr:g}: no stop", out.stderr)
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error: ")] or [""]
    if " moved aside to " in line:  # the state before a NaN loss/gradient
        m = re.search(
            r"Checkpoint (\d+) leads to it at any learning rate: moved aside to (\S+)\.", line
        )
        _ok(m is not None and os.path.isdir(m.group(2)), f"lr {lr:g}: not moved aside", line)
    m = re.search(r"Last good checkpoint: (?:step (\d+) in \S+|none yet)$", line)
    _ok(m is not None, f"lr {lr:g}: no last good checkpoint named", out.stderr)
    last = int(m.group(1)) if m.group(1) else None
    _ok(max(steps(w), default=None) == last, f"lr {lr:g}: checkpoints after {last}: {steps(w)}")
    for s in steps(w):
        _ok(_finite(w, s), f"lr {lr:g}: checkpoint {s} holds non-finite values", line)
    out = runs.run(w, *every, *_lr(1e-3), "--allow_config_change")
    _ok(out.returncode == 0, f"lr {lr:g}: the run at lr 1e-3 from {last} failed", out.stderr)
    _ok(_finite(w, STEPS), f"lr {lr:g}: the run at lr 1e-3 from {last} ends non-finite")
    return f"lr {lr:g}: stopped naming checkpoint {last} (finite); lr 1e-3 from it ends finite"


def _wait_for(proc, workdir, step: int) -> None:
    t0 = time.time()
    while step not in steps(workdir):
        if proc.poll() is not None:
            raise Failure(f"the run ended before checkpoint {step}\n" + proc.stderr.read())
        _ok(time.time() - t0 < 300, f"no checkpoint {step} in time")
        time.sleep(0.005)


def sigint(runs: Runs) -> str:
    """Ctrl-C (SIGINT) after checkpoint 4: like SIGTERM, the step in progress is saved and the
    run exits 130 with one line, no traceback; run again, it ends with the uninterrupted
    run's parameters."""
    w = os.path.join(runs.root, "sigint")
    shutil.rmtree(w, ignore_errors=True)
    proc = runs.start(w)
    _wait_for(proc, w, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    _ok(proc.returncode == 130, f"SIGINT: exit {proc.returncode}, not 130", err)
    m = re.search(r"Interrupted \(SIGINT\): checkpoint of step (\d+) saved in ", err)
    _ok(m is not None, "SIGINT: no line naming the checkpoint", err)
    _ok("Traceback" not in err and "KeyboardInterrupt" not in err, "SIGINT: a traceback", err)
    at = int(m.group(1))
    _ok(max(steps(w)) == at >= 4, f"SIGINT: checkpoints {steps(w)}, line names {at}", err)
    out = runs.run(w)
    _ok(out.returncode == 0 and f"at step {at}" in out.stderr, "SIGINT: no resume", out.stderr)
    _ok(same(params(w, STEPS), params(runs.reference(), STEPS)), "SIGINT: parameters differ")
    return f"checkpoint of step {at}, exit 130, resumed, parameters equal"


def sigterm_in_final_evaluation(runs: Runs) -> str:
    """SIGTERM once the last step's checkpoint is written (the final evaluation, made long by
    a test split of 400 images in batches of 1): exit 143 with one line saying the
    checkpoint is saved and eval.json is not; run again, it trains nothing and evaluates."""
    w = os.path.join(runs.root, "sigterm_final")
    shutil.rmtree(w, ignore_errors=True)
    big = ("--config.data.synthetic.test_per_class=100", "--config.train.eval_batch_size=1")
    proc = runs.start(w, *big)
    _wait_for(proc, w, STEPS)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    _ok(proc.returncode == 143, f"final evaluation: exit {proc.returncode}, not 143", err)
    _ok(
        f"Pre-empted during the final evaluation: the checkpoint of step {STEPS} is saved in "
        in err,
        "final evaluation: no line",
        err,
    )
    _ok(not os.path.exists(os.path.join(w, "eval.json")), "final evaluation: eval.json written")
    out = runs.run(w, *big)
    _ok(out.returncode == 0, "final evaluation: the restart failed", out.stderr)
    _ok(f"at step {STEPS}" in out.stderr, "final evaluation: not resumed", out.stderr)
    _ok(
        re.search(r"^step +\d+/", out.stderr + out.stdout, re.M) is None,
        "trained again",
        out.stderr,
    )
    result = json.load(open(os.path.join(w, "eval.json")))
    _ok(result["step"] == STEPS and result["metrics"]["count"] == 400, f"eval.json: {result}")
    return f"exit 143 in the final evaluation; the restart evaluated step {STEPS}"


@contextlib.contextmanager
def tmpfs(path: str, size: str):
    """A tmpfs of `size` mounted at `path` (yields False where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def checkpoint_write_fails(runs: Runs) -> str | None:
    """A workdir on a 130 MB disk: checkpoint 4 (80 MB) fits, 8 does not. Its asynchronous
    write fails; the run stops before its end with one line naming checkpoint 8, the folder
    and 'No space left on device', orbax's tracebacks in the workdir's log file, checkpoint 4
    intact. None where a tmpfs cannot be mounted (not root)."""
    mnt = os.path.join(runs.root, "small_disk")
    runs.reference()
    with tmpfs(mnt, "130m") as mounted:
        if not mounted:
            return None
        w = os.path.join(mnt, "w")
        out = runs.run(w)
        log = os.path.join(w, "checkpoint_errors.log")
        expected = (
            f"error: could not write checkpoint 8 to {w}/checkpoints: No space left on device "
            f"(orbax's messages in {log}). The earlier checkpoints are kept."
        )
        lines = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
        _ok(out.returncode == 2 and lines == [expected], "no one-line error", out.stderr)
        _ok(len(out.stderr.splitlines()) < 30, "more than the error on the console", out.stderr)
        _ok("No space left on device" in open(log).read(), f"nothing in {log}")
        last = max(cli.losses(out.stdout + out.stderr))
        _ok(last < STEPS and steps(w) == [4], f"trained to {last}; checkpoints {steps(w)}")
        _ok(same(params(w, 4), params(runs.reference(), 4)), "checkpoint 4 changed")
    return f"stopped at step {last} naming checkpoint 8 and the disk; checkpoint 4 intact"


_PREPARE = """
import os, sys, time
from fgvc_jax import data
from fgvc_jax.data import cache
c = data.default_config("synthetic_fgvc")
c.data_dir = sys.argv[1]
c.synthetic.num_classes, c.synthetic.train_per_class, c.synthetic.test_per_class = 4, 1000, 2
# Both processes start preparing together (the imports before it take up to ~10 s on a loaded
# machine, which let one process finish before the other began), and the preparation of 4000
# images lasts longer than the 1 s a waiter waits quietly before it says so (1000 took ~1 s).
open(os.path.join(sys.argv[2], str(os.getpid())), "w").close()
while len(os.listdir(sys.argv[2])) < 2:
    time.sleep(0.01)
data.prepare(c)
print("images", len(cache.load(c, "train", 64, 1)))
"""


def two_preparations(root: str) -> str:
    """Two processes started together on a new data_dir (a sweep's first runs): one prepares
    the dataset and builds the decoded cache, the other says it waits, then reuses both."""
    data_dir = os.path.join(root, "tfds_shared")
    ready = os.path.join(root, "ready")
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(ready, ignore_errors=True)
    os.makedirs(ready)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARE, data_dir, ready],
            cwd=cli.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env(),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        _ok(p.returncode == 0 and "images 4000" in out, "a preparation failed", err)
        _ok("Traceback" not in err, "a traceback", err)
    text = "".join(out + err for out, err in outs)
    _ok(text.count("Preparing dataset synthetic_fgvc") == 1, "not prepared once", text)
    _ok(text.count("Decoded cache ") == 1, "the cache not built once", text)
    _ok(
        re.search(r"Waiting for PID \d+ on host \S+, preparing synthetic_fgvc", text),
        "no wait",
        text,
    )
    return "prepared and cached once; the other process waited and reused them"


def preparation_on_a_full_disk(root: str) -> str | None:
    """A dataset prepared on a 300 KB disk: one line naming the dataset, the folder and the
    space, no traceback. None where a tmpfs cannot be mounted."""
    mnt = os.path.join(root, "tiny_disk")
    with tmpfs(mnt, "300k") as mounted:
        if not mounted:
            return None
        data_dir = os.path.join(mnt, "tfds")
        out = cli.run(
            cli.tiny_args(
                "baseline_resnet",
                os.path.join(root, "w_full"),
                data_dir,
                "--config.data.synthetic.train_per_class=100",
            ),
            timeout=300,
        )
        lines = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
        _ok(out.returncode == 2 and "Traceback" not in out.stderr, "not one line", out.stderr)
        _ok(
            len(lines) == 1
            and lines[0].startswith(
                f"error: No space left on device to prepare dataset 'synthetic_fgvc' in {data_dir} ("
            ),
            "the line does not name the dataset and folder",
            out.stderr,
        )
    return "one line naming the dataset, the folder and the free space"


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
    checks += [(f"damaged cache ({k})", lambda k=k: damaged_cache(runs, k)) for k in CACHE_DAMAGE]
    checks += [
        (
            f"diverged (lr {lr:g}{', resumed' if r else ''})",
            lambda lr=lr, r=r: diverged(runs, lr, r),
        )
        for lr, r in ((1e39, False), (1e39, True), (1e6, False))
    ]
    checks += [("SIGINT", lambda: sigint(runs))]
    checks += [("SIGTERM in the final evaluation", lambda: sigterm_in_final_evaluation(runs))]
    checks += [("checkpoint write fails", lambda: checkpoint_write_fails(runs) or "skipped")]
    checks += [("two preparations", lambda: two_preparations(root))]
    checks += [
        ("preparation on a full disk", lambda: preparation_on_a_full_disk(root) or "skipped")
    ]
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
