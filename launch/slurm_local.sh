#!/usr/bin/env bash
# A SLURM cluster on this machine, for the launcher's tests and for trying sbatch scripts locally:
#
#   partition debug    (default): one node, this host itself
#   partition twonode           : two nodes n1 and n2, each a slurmd in its own network and UTS namespace,
#                                 with its own hostname and address on a private bridge (10.77.0.0/24 by
#                                 default), sharing this host's filesystem as cluster nodes share /home
#
#   bash launch/slurm_local.sh start            # install slurm-wlm + munge if missing, write slurm.conf, start
#   bash launch/slurm_local.sh status           # exit 0 when the debug node accepts jobs
#   bash launch/slurm_local.sh status-two-nodes # exit 0 when n1 and n2 accept jobs
#   bash launch/slurm_local.sh stop             # stop the daemons this script started, remove the namespaces
#
# Needs root (Debian/Ubuntu: apt-get; ip netns). The nodes advertise more CPUs than the machine has
# (OVERSUBSCRIBE_CPUS, default 8, for the debug node; 4 each for n1 and n2) so that a test's jobs can share a
# 2-core runner; nothing pins processes to cores (task/none), so this is a scheduling fiction only, fine for
# tests. Where network namespaces cannot be made, the debug node still starts and `status-two-nodes` fails
# with the reason. Daemon logs: /var/log/slurm-local/.
#
# Why namespaces and not two slurmd sharing this hostname (Debian's slurm-wlm is built with MULTIPLE_SLURMD):
# torchrun's c10d rendezvous decides which node hosts its store, and the workers find rank 0 (MASTER_ADDR), by
# hostname. With both nodes called after this host, both nodes' agents claim the store and the job tests a
# rendezvous no real cluster has; with a hostname and an address each, the batch script runs as on two hosts.
set -euo pipefail

NODE=$(hostname -s)
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurm-local
LOG_DIR=/var/log/slurm-local
RUN_DIR=/run/slurm-local
CPUS=${OVERSUBSCRIBE_CPUS:-8}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
TWO_NODE_PARTITION=twonode
TWO_NODES=(n1 n2)
TWO_NODE_CPUS=4
SUBNET=${SLURM_LOCAL_SUBNET:-10.77.0}   # the bridge is .1 (this host), node i is .1i; never leaves the machine
BRIDGE=slurmlocal0

log() { echo "slurm_local: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null && command -v ip >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    log "slurm-wlm/munge/iproute2 are missing and installing them needs root"; exit 1
  fi
  log "installing slurm-wlm, munge and iproute2 (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge iproute2 >/dev/null
}

namespace() { echo "slurm-$1"; }
node_addr() { echo "$SUBNET.1${1#n}"; }

# The two nodes' network: a bridge on this host ($SUBNET.1) and one veth per node namespace. Each namespace
# gets a hosts file (/etc/netns/<ns>/hosts, where `ip netns exec` looks for it too) naming every node and this
# host, so slurmd, srun and torchrun inside resolve the cluster as on a real one. Idempotent.
setup_two_node_network() {
  local name ns
  # grep without -q in these checks: under pipefail, grep -q exiting at its first match can fail the pipeline
  # (SIGPIPE to the writer), which would read as "missing".
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep "inet $SUBNET.1/" >/dev/null || ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for name in "${TWO_NODES[@]}"; do
    ns=$(namespace "$name")
    ip netns list | grep -w "$ns" >/dev/null || ip netns add "$ns"
    if ! ip link show "sl-$name" >/dev/null 2>&1; then
      ip link add "sl-$name" type veth peer name "sl-$name-in"
      ip link set "sl-$name-in" netns "$ns"
    fi
    ip link set "sl-$name" master "$BRIDGE"
    ip link set "sl-$name" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr show dev "sl-$name-in" | grep "inet $(node_addr "$name")/" >/dev/null \
      || ip netns exec "$ns" ip addr add "$(node_addr "$name")/24" dev "sl-$name-in"
    ip netns exec "$ns" ip link set "sl-$name-in" up
    mkdir -p "/etc/netns/$ns"
    {
      echo "127.0.0.1 localhost"
      echo "$SUBNET.1 $NODE"
      local other
      for other in "${TWO_NODES[@]}"; do echo "$(node_addr "$other") $other"; done
    } > "/etc/netns/$ns/hosts"
  done
}

teardown_two_node_network() {
  local name ns
  for name in "${TWO_NODES[@]}"; do
    ns=$(namespace "$name")
    ip link del "sl-$name" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

# Prints the config; with two_nodes=1 also the two namespace nodes, and slurmctld at the bridge address (which
# this host reaches too) so that clients inside the namespaces find it.
render_config() {
  local two_nodes=$1 mem_mb ctld_host name nodes_line=""
  # Memory is not a consumable resource here (CR_CPU), so RealMemory only has to be a plausible lower bound.
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ctld_host=$NODE
  if [ "$two_nodes" = 1 ]; then
    ctld_host="$NODE($SUBNET.1)"
    for name in "${TWO_NODES[@]}"; do
      nodes_line+="NodeName=$name NodeHostname=$name NodeAddr=$(node_addr "$name") CPUs=$TWO_NODE_CPUS"
      nodes_line+=" RealMemory=$mem_mb State=UNKNOWN"$'\n'
    done
    nodes_line+="PartitionName=$TWO_NODE_PARTITION Nodes=$(IFS=,; echo "${TWO_NODES[*]}")"
    nodes_line+=" Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO"
  fi
  cat <<EOF
# Written by launch/slurm_local.sh: a local cluster for tests. Do not use in production.
ClusterName=local
SlurmctldHost=$ctld_host
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
# One slurmd per node on this host: %n (the node name) keeps their spool, pid and log files apart.
SlurmdSpoolDir=$STATE_DIR/d-%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
$nodes_line
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

node_idle() { sinfo -h -n "$1" -o "%t" 2>/dev/null | grep -E '^(idle|mix|alloc)' >/dev/null; }

wait_for_node() {
  local node=$1 i
  for i in $(seq 1 60); do
    node_idle "$node" && return 0
    # A node that came back after a restart can be left "down"/"drain"; ReturnToService=2 usually handles it.
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  log "node $node did not become idle; see $LOG_DIR"; sinfo >&2 || true
  return 1
}

start_two_node_slurmds() {
  local name ns
  for name in "${TWO_NODES[@]}"; do
    pid_alive "$RUN_DIR/slurmd-$name.pid" && continue
    ns=$(namespace "$name")
    mkdir -p "$STATE_DIR/d-$name"
    # The node's network namespace, its own UTS namespace for its own hostname, and a mount namespace only to
    # put its hosts file over /etc/hosts (not `ip netns exec`: it remounts /sys, hiding the cgroup mounts slurmd
    # needs). slurmd's children, the job's steps, inherit all three.
    nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation slave \
      sh -c "mount --bind /etc/netns/$ns/hosts /etc/hosts && hostname $name && exec slurmd -N $name"
  done
}

stop_pidfile() {
  local pidfile=$1 pid i
  pid_alive "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid"
  for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

stop_slurm_daemons() {
  local pidfile
  for pidfile in "$RUN_DIR"/slurmd-*.pid; do stop_pidfile "$pidfile"; done
  stop_pidfile "$RUN_DIR/slurmctld.pid"
}

start() {
  install_packages
  mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$LOG_DIR" "$RUN_DIR"
  local two_nodes=1 problem config
  # In a separate shell: errexit does not apply to a function called as a condition, and any failed step must count.
  if ! problem=$(bash "$0" setup-two-node-network 2>&1); then
    two_nodes=0
    teardown_two_node_network
    log "partition $TWO_NODE_PARTITION not available: cannot make network namespaces: ${problem//$'\n'/ }"
  fi
  config=$(render_config "$two_nodes")
  if [ -f "$CONF_DIR/slurm.conf" ] && [ "$config" != "$(cat "$CONF_DIR/slurm.conf")" ]; then
    # Nodes added or removed: slurmctld and the slurmds must restart to see them (scontrol reconfigure cannot).
    log "slurm.conf changed; restarting the daemons"
    stop_slurm_daemons
  fi
  printf '%s\n' "$config" > "$CONF_DIR/slurm.conf"
  start_munge
  if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
    slurmctld -i
  else
    scontrol reconfigure
  fi
  mkdir -p "$STATE_DIR/d-$NODE"
  pid_alive "$RUN_DIR/slurmd-$NODE.pid" || slurmd -N "$NODE"
  wait_for_node "$NODE"
  log "up: node $NODE, partition $PARTITION, $CPUS CPUs"
  if [ "$two_nodes" = 1 ]; then
    start_two_node_slurmds
    local name
    for name in "${TWO_NODES[@]}"; do wait_for_node "$name"; done
    log "up: nodes ${TWO_NODES[*]} ($SUBNET.0/24), partition $TWO_NODE_PARTITION, $TWO_NODE_CPUS CPUs each"
  fi
}

stop() {
  stop_slurm_daemons
  stop_pidfile /run/munge/munged.pid
  teardown_two_node_network
  log "stopped"
}

status_two_nodes() {
  local name
  for name in "${TWO_NODES[@]}"; do node_idle "$name" || return 1; done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) node_idle "$NODE" ;;
  status-two-nodes) status_two_nodes ;;
  setup-two-node-network) setup_two_node_network ;;  # used by start
  *) echo "usage: $0 [start|stop|status|status-two-nodes]" >&2; exit 2 ;;
esac
