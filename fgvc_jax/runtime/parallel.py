"""Data parallelism: multi-process start-up, the device mesh and its shardings.

One program over a `Mesh(('data',))` of all devices of all processes (the current JAX form
of pmap data parallelism): parameters are replicated, batches are sharded on 'data', and
GSPMD inserts the all-reduces
(gradient mean, BatchNorm statistics over the global batch).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# Environment variables that say "this is one process of several"; each names its launcher.
_MULTI_PROCESS_ENV = {
    "JAX_COORDINATOR_ADDRESS": "explicit (launch/gpu_node.sh or your own launcher)",
    "SLURM_NTASKS": "SLURM",
    "OMPI_COMM_WORLD_SIZE": "Open MPI",
    "TPU_WORKER_HOSTNAMES": "Cloud TPU pod",
}


def _is_multi_process_env() -> str | None:
    """The launcher that started several processes, or None for a single process."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return _MULTI_PROCESS_ENV["JAX_COORDINATOR_ADDRESS"]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return _MULTI_PROCESS_ENV["SLURM_NTASKS"]
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return _MULTI_PROCESS_ENV["OMPI_COMM_WORLD_SIZE"]
    if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return _MULTI_PROCESS_ENV["TPU_WORKER_HOSTNAMES"]
    return None


def initialize_distributed() -> None:
    """`jax.distributed.initialize` from the environment when several processes run; else no-op.

    Explicit form (any cluster): JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=n,
    JAX_PROCESS_ID=i (and optionally JAX_LOCAL_DEVICE_IDS). SLURM, Open MPI and TPU pods are
    detected by JAX itself. Must run before anything touches a jax backend.
    """
    launcher = _is_multi_process_env()
    if launcher is None or jax.distributed.is_initialized():
        return
    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not: set all three "
                "(JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=n JAX_PROCESS_ID=i)."
            )
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    jax.distributed.initialize(**kwargs)
    logging.info(
        "jax.distributed initialised (%s): process %d of %d, %d local / %d devices",
        launcher,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters and optimizer state: a full copy on every device."""
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: the leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """Fail with one clear message when the batch does not split evenly over the devices."""
    n = mesh.devices.size
    if global_batch_size % n or global_batch_size % jax.process_count():
        raise ValueError(
            f"config.{what}={global_batch_size} must be a multiple of the number of devices "
            f"({n}, over {jax.process_count()} process(es))."
        )


def host_to_global(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch (this process's rows) → global jax.Arrays sharded on 'data'."""
    sharding = data_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
