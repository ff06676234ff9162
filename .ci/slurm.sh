#!/usr/bin/env bash
# Installs and starts a one-node Slurm on loopback for the Slurm tests (SPEC section 10):
# Debian's slurm-wlm and munge, run as root without systemd. Idempotent: installs only what is
# missing, starts only what is not running, and waits until the node is idle.
#
#   .ci/slurm.sh          install, configure, start; prints the node state when ready
#   .ci/slurm.sh stop     stops munged, slurmctld and slurmd by the PIDs recorded below
#   .ci/slurm.sh status   exit 0 when the node is idle (or mixed/allocated), else 1
#
# Everything it writes lives in $PEXEN_SLURM_DIR (default /tmp/pexen-slurm): the configuration
# (slurm.conf), the munge key, spool directories, logs and PID files. Clients find the
# configuration through /etc/slurm/slurm.conf, which this script makes a symbolic link to its own
# file (Debian's client tools read that path; tests need no environment variable).
# Facts for this machine (Slurm 22.05, Debian 12): SlurmctldHost and NodeName must be the short
# hostname with NodeAddr=127.0.0.1; no cgroups (proctrack/linuxproc, task/none); accounting off.
set -euo pipefail

DIR="${PEXEN_SLURM_DIR:-/tmp/pexen-slurm}"
HOST="$(hostname -s)"

stop() {
  local name pid
  for name in slurmd slurmctld munged; do
    if [[ -f "$DIR/$name.pid" ]]; then
      pid="$(cat "$DIR/$name.pid")"
      if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$DIR/$name.pid"
    fi
  done
  echo "slurm: stopped"
}

running() { # name -> 0 when its recorded pid is alive
  [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}

node_ready() {
  local state
  state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)"
  [[ "$state" == idle* || "$state" == mixed* || "$state" == allocated* ]]
}

case "${1:-start}" in
  stop) stop; exit 0 ;;
  status) node_ready; exit $? ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if [[ "$(id -u)" != 0 ]]; then
  echo "slurm: must run as root (starts slurmd and munged)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 ||
  ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$DIR"/{spool/ctld,spool/d,log,munge/run,munge/lib}
chmod 700 "$DIR/munge" "$DIR/munge/lib"
chmod 755 "$DIR/munge/run"

CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)"
CONF="$DIR/slurm.conf"
cat >"$CONF.new" <<EOF
# Written by .ci/slurm.sh: one node on loopback for pexen's tests.
ClusterName=pexen
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=30
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
mv "$CONF.new" "$CONF"
# An empty gres.conf: the node has no GPUs, but --gres=gpu:0 must parse.
: >"$DIR/gres.conf"
mkdir -p /etc/slurm
ln -sfn "$CONF" /etc/slurm/slurm.conf
ln -sfn "$DIR/gres.conf" /etc/slurm/gres.conf

if [[ ! -s "$DIR/munge/munge.key" ]]; then
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
fi

# munged refuses keys and sockets it does not trust; --force accepts a root-owned /tmp path.
SOCKET=/run/munge/munge.socket.2
mkdir -p /run/munge
if ! running munged; then
  munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/lib/seed"
fi
if ! running slurmctld; then
  slurmctld -f "$CONF"
fi
if ! running slurmd; then
  slurmd -f "$CONF"
fi

for _ in $(seq 1 300); do
  if node_ready; then
    echo "slurm: node $HOST $(sinfo -h -n "$HOST" -o %T | head -n 1) ($CPUS CPUs, ${MEM_MB} MB); config $CONF; stop with $0 stop"
    exit 0
  fi
  # A node left DOWN by an earlier crash comes back once told to.
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 0.1
done
echo "slurm: node $HOST not idle after 30 s; logs in $DIR/log" >&2
sinfo >&2 || true
exit 1
