"""Helpers to run the real CLI (`python -m fgvc_jax.main`) in a subprocess on a tiny
synthetic_fgvc (4 classes, 2 training images each: every step sees the same 8 images)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_args(method: str, workdir, data_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fgvc_jax.main",
        "--config",
        f"configs/{method}.py:synthetic",
        "--workdir",
        str(workdir),
        f"--config.data.data_dir={data_dir}",
        "--config.data.synthetic.num_classes=4",
        "--config.data.synthetic.train_per_class=2",
        "--config.data.synthetic.test_per_class=2",
        "--config.data.num_workers=1",
        "--config.train.batch_size=8",
        "--config.train.eval_batch_size=8",
        "--config.train.log_every=1",
        "--config.data.val_fraction=0",
        *extra,
    ]


def env(**kw) -> dict:
    e = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **kw)
    e.pop("XLA_FLAGS", None)
    return e


def run(args, timeout=400, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=ROOT, env=env(**kw), capture_output=True, text=True, timeout=timeout
    )


def losses(log: str) -> dict[int, float]:
    """{step: train loss} from the trainer's console lines ('step 6/40  epoch ... loss x')."""
    out = {}
    for m in re.finditer(
        r"^step +(\d+)/\d+ +epoch +\S+ +loss +([-+0-9.eEnaif]+)", log, re.MULTILINE
    ):
        out[int(m.group(1))] = float(m.group(2))
    return out
