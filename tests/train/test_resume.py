"""Exact resume through the real CLI: a run killed with SIGKILL, resumed, pre-empted with
SIGTERM (which must checkpoint the current step), and resumed again ends with parameters
bitwise equal to an uninterrupted run of the same config."""

import os
import re
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train import cli

STEPS = 40


def _steps(workdir):
    d = workdir / "checkpoints"
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if d.exists() else []


def _start(args, cache):
    return subprocess.Popen(
        args,
        cwd=cli.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env(**cache),
    )


def _wait_for_checkpoint(proc, workdir, step, timeout=400):
    t0 = time.time()
    while not any(s >= step for s in _steps(workdir)):
        if proc.poll() is not None:
            pytest.fail("run ended before it could be interrupted:\n" + proc.stderr.read()[-3000:])
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail("no checkpoint in time")
        time.sleep(0.02)


def _params(workdir, step):
    tree = ocp.StandardCheckpointer().restore(
        os.path.abspath(workdir / "checkpoints" / str(step) / "default")
    )
    return tree["params"], tree["batch_stats"], tree["opt_state"]


def test_sigkill_and_sigterm_resume_is_bitwise_exact(tmp_path):
    data_dir = tmp_path / "tfds"
    # One compilation serves the four runs (same program); the results do not depend on it.
    cache = dict(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    args = lambda w: cli.tiny_args(
        "baseline_resnet",
        w,
        data_dir,
        f"--config.train.num_steps={STEPS}",
        "--config.train.checkpoint_every=8",
        "--config.method.label_smoothing=0.1",
    )
    a, b = tmp_path / "a", tmp_path / "b"
    out = cli.run(args(a), **cache)
    assert out.returncode == 0, out.stderr[-3000:]

    # SIGKILL once a mid-training checkpoint exists.
    proc = _start(args(b), cache)
    _wait_for_checkpoint(proc, b, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_steps(b))
    assert killed_at < STEPS

    # Resume; SIGTERM after the next periodic checkpoint: a checkpoint of the current step.
    proc = _start(args(b), cache)
    _wait_for_checkpoint(proc, b, killed_at + 8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    m = re.search(r"Pre-empted: checkpoint of step (\d+) saved", err)
    assert m, err[-3000:]
    term_step = int(m.group(1))
    assert "Resumed from" in err and max(_steps(b)) == term_step < STEPS

    out = cli.run(args(b), **cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"at step {term_step}" in out.stderr

    pa, pb = _params(a, STEPS), _params(b, STEPS)
    la, lb = jax.tree.leaves(pa), jax.tree.leaves(pb)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
    # The runs really trained: parameters moved away from those of the oldest kept checkpoint.
    early = jax.tree.leaves(_params(a, min(_steps(a))))
    assert not all(np.array_equal(x, y) for x, y in zip(la, early))
