#!/usr/bin/env bash
# A private one-node SLURM (Debian's slurm-wlm; `make slurm` installs it) in DIR, as the
# current user: its own munged, slurmctld and slurmd, with their key, socket, ports, state,
# spool and logs in DIR. Once `sinfo` shows the node idle it prints
#   slurm cluster ready: SLURM_CONF=DIR/slurm.conf
# runs COMMAND with SLURM_CONF exported (default: wait until stdin closes), then cancels the
# jobs left and stops the three daemons (also on SIGTERM/SIGINT).
#   tests/slurm_cluster.sh /tmp/slurm bash       # a shell beside a live cluster
# Containers have no systemd or cgroups here: proctrack/linuxproc, task/none. A requeued job
# may start again only after cred_expire (120 s by default): 10 s here, and the scheduler
# looks every 2 s (sched_interval), so a requeued job starts ~11 s after its requeue. DIR
# should be short: munged's socket path must fit in 108 characters.
set -euo pipefail
DIR=${1:?usage: tests/slurm_cluster.sh DIR [COMMAND...]}; shift
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
chmod 755 "$DIR/munge"
HOST=$(hostname -s)
ME=$(id -un)
CTLD_PORT=$((20000 + RANDOM % 20000))
SLURMD_PORT=$((CTLD_PORT + 1))
export SLURM_CONF=$DIR/slurm.conf
PIDS=()

stop() {
  trap - EXIT INT TERM
  set +e
  # Jobs left: their slurmstepd would outlive slurmd. Made not requeueable first, so that
  # none comes back while the daemons stop.
  local jobs job
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    for job in $jobs; do scontrol update JobId="$job" Requeue=0; done
    scancel --quiet $jobs
    for _ in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
  wait
}
trap stop EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

mungekey --create --force --keyfile="$DIR/munge/munge.key"
munged --foreground --force --socket="$DIR/munge/socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
  --seed-file="$DIR/munge/munged.seed" 2>>"$DIR/munge/munged.out" &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$DIR/munge/socket" ] && break; sleep 0.1; done

cat > "$SLURM_CONF" <<EOF
ClusterName=fgvctest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$ME
SlurmdUser=$ME
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=30
OverTimeLimit=0
MinJobAge=120
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -D -i >"$DIR/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -N "$HOST" >"$DIR/slurmd.out" 2>&1 &
PIDS+=($!)
for i in $(seq 60); do
  [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && break
  if [ "$i" = 60 ]; then
    echo "slurm cluster in $DIR: the node is not idle after 60 s" >&2
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "slurm cluster ready: SLURM_CONF=$SLURM_CONF"
if [ $# -gt 0 ]; then
  "$@"
else
  cat <&0 >/dev/null &
  PIDS+=($!)
  wait $!
fi
