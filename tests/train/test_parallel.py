"""Data parallelism: 1 device vs 8 forced CPU devices give the same step (loss, parameters,
BatchNorm statistics over the global batch); environment-driven jax.distributed start-up."""

import json
import os
import subprocess
import sys

import pytest

from fgvc_jax.runtime import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_one_device_and_eight_devices_agree():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.train._dp_equivalence"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    for accumulate, r in result.items():
        assert r["loss"] <= 1e-5, (accumulate, r)
        assert r["params"] <= 1e-5, (accumulate, r)
        assert r["batch_stats"] <= 1e-5, (accumulate, r)
        assert r["losses"][1] != r["losses"][0]  # the step really changed something


def test_single_process_is_a_no_op(monkeypatch):
    for k in (
        "JAX_COORDINATOR_ADDRESS",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
        "TPU_WORKER_HOSTNAMES",
    ):
        monkeypatch.delenv(k, raising=False)
    assert parallel._is_multi_process_env() is None
    parallel.initialize_distributed()  # must not try to reach a coordinator


def test_explicit_environment_must_be_complete(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        parallel.initialize_distributed()


def test_slurm_single_task_is_not_multi_process(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel._is_multi_process_env() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel._is_multi_process_env() == "SLURM"
