#!/usr/bin/env bash
# Cloud TPU pod slice: the same command on every worker; JAX detects the pod (TPU_WORKER_*)
# and fgvc_jax.runtime.parallel calls jax.distributed.initialize().
#   launch/tpu_pod.sh TPU_NAME ZONE configs/swinfc.py:cub gs://bucket/runs/swinfc_cub [overrides]
# The workdir must be shared by all workers (a gs:// bucket: orbax and TensorBoard write there).
# The repository must be at ~/fgvc_jax on every worker with the venv made by `make venv`.
set -euo pipefail
TPU=${1:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}; ZONE=${2:?zone}
CONFIG=${3:?config}; WORKDIR=${4:?workdir}; shift 4
REPO=${REPO:-~/fgvc_jax}
quoted=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $REPO && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2' && \
   .venv/bin/python -m fgvc_jax.main --config $CONFIG --workdir $WORKDIR --config.train.dtype=bfloat16$quoted"
