"""`train.batch_norm='per_device'` is PyTorch DDP's per-GPU BatchNorm (4 forced CPU devices in
a subprocess, tests/train/_per_device_bn.py): the output of four BatchNorm2d each on its
quarter of the batch, the running statistics of rank 0's (DDP's broadcast_buffers), and a
train step equal to the four quarters' steps combined as DDP combines them."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from fgvc_jax import recipe
from fgvc_jax.runtime import parallel

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_per_device_batch_norm_is_ddps():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.train._per_device_bn"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    layer, step = r["layer"], r["step"]
    # float64: four PyTorch BatchNorm2d, each on its quarter
    assert layer["output"] <= 1e-12 * layer["output_scale"], layer
    assert layer["global_vs_per_device"] > 0.1, layer  # the quarters' statistics do differ
    # running statistics: rank 0's (DDP broadcasts rank 0's buffers), not another rank's
    assert layer["running_mean_vs_rank0"] <= 1e-12 and layer["running_var_vs_rank0"] <= 1e-12
    assert layer["running_mean_vs_rank1"] > 1e-3, layer
    # the train step (float32): BN statistics = quarter 0's step, loss and params = the mean
    assert step["batch_stats_vs_quarter0"] <= 1e-6, step
    assert step["batch_stats_vs_quarter1"] > 1e-3 and step["batch_stats_vs_global"] > 1e-3, step
    assert step["loss"] <= 1e-5 and step["params"] <= 1e-6, step


def test_batch_norm_setting_global_by_default_and_checked():
    mesh = parallel.make_mesh(jax.devices()[:1])
    config = ml_collections.ConfigDict({"train": {"batch_norm": "global"}})
    assert recipe.batch_norm_groups(config, mesh) == 1
    assert recipe.batch_norm_groups(ml_collections.ConfigDict({"train": {}}), mesh) == 1
    config.train.batch_norm = "per_device"
    assert recipe.batch_norm_groups(config, mesh) == mesh.devices.size
    config.train.batch_norm = "sync"
    with pytest.raises(
        ValueError, match="config.train.batch_norm='sync'; valid: global, per_device"
    ):
        recipe.batch_norm_groups(config, mesh)
