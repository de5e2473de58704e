#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the launcher's tests and for trying sbatch scripts locally.
#
#   bash launch/slurm_local.sh start    # install slurm-wlm + munge if missing, write slurm.conf, start daemons
#   bash launch/slurm_local.sh status   # exit 0 when the node accepts jobs
#   bash launch/slurm_local.sh stop     # stop the daemons this script started (by their pid files)
#
# Needs root (Debian/Ubuntu: apt-get). The node advertises OVERSUBSCRIBE_CPUS CPUs (default 8) whatever the
# machine has, so that a test's two-process job and the next one can be scheduled on a 2-core runner; nothing
# pins processes to cores (task/none), so this is a scheduling fiction only, fine for tests.
# Daemon logs: /var/log/slurm-local/.
set -euo pipefail

NODE=$(hostname -s)
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurm-local
LOG_DIR=/var/log/slurm-local
RUN_DIR=/run/slurm-local
CPUS=${OVERSUBSCRIBE_CPUS:-8}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}

log() { echo "slurm_local: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    log "slurm-wlm/munge are missing and installing them needs root"; exit 1
  fi
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
  mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$LOG_DIR" "$RUN_DIR"
  # Memory is not a consumable resource here (CR_CPU), so RealMemory only has to be a plausible lower bound.
  local mem_mb
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by launch/slurm_local.sh: a one-node cluster for tests. Do not use in production.
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds (default 120) before it may start again, so that the credential its
# previous run revoked has expired; 10 s keeps the requeue tests short without racing that revocation.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdParameters=config_overrides
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
}

wait_for_node() {
  local i
  for i in $(seq 1 60); do
    if sinfo -h -n "$NODE" -o "%t" 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
      return 0
    fi
    # A node that came back after a restart can be left "down"/"drain"; ReturnToService=2 usually handles it.
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  log "node $NODE did not become idle; see $LOG_DIR"; sinfo >&2 || true
  return 1
}

start() {
  install_packages
  write_config
  start_munge
  if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
    slurmctld -i
  else
    scontrol reconfigure
  fi
  pid_alive "$RUN_DIR/slurmd.pid" || slurmd
  wait_for_node
  log "up: node $NODE, partition $PARTITION, $CPUS CPUs"
}

stop_pidfile() {
  local pidfile=$1 pid i
  pid_alive "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid"
  for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  stop_pidfile "$RUN_DIR/slurmd.pid"
  stop_pidfile "$RUN_DIR/slurmctld.pid"
  stop_pidfile /run/munge/munged.pid
  log "stopped"
}

status() {
  sinfo -h -n "$NODE" -o "%t" 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
