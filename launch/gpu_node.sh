#!/usr/bin/env bash
# One GPU node: one process that drives all local GPUs (jit over a Mesh of all devices).
#   launch/gpu_node.sh configs/swinfc.py:cub runs/swinfc_cub [--config.key=value ...]
# Optional: PROCESSES_PER_NODE=N starts N processes (one per GPU group) on this node with an
# explicit jax.distributed coordinator (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
# JAX_PROCESS_ID, read by fgvc_jax.runtime.parallel.initialize_distributed).
set -euo pipefail
CONFIG=${1:?usage: gpu_node.sh CONFIG WORKDIR [overrides...]}; WORKDIR=${2:?workdir}; shift 2
PYTHON=${PYTHON:-python}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
NPROC=${PROCESSES_PER_NODE:-1}
if [[ "$NPROC" == 1 ]]; then
  exec "$PYTHON" -m fgvc_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
fi
NGPU=$(nvidia-smi -L | wc -l)
PER=$(( NGPU / NPROC ))
PORT=${PORT:-$(( 20000 + RANDOM % 20000 ))}
pids=()
for (( i = 0; i < NPROC; i++ )); do
  ids=$(seq -s, $(( i * PER )) $(( (i + 1) * PER - 1 )))
  JAX_COORDINATOR_ADDRESS=localhost:$PORT JAX_NUM_PROCESSES=$NPROC JAX_PROCESS_ID=$i \
  JAX_LOCAL_DEVICE_IDS=$ids \
    "$PYTHON" -m fgvc_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT   # forward pre-emption notices
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
