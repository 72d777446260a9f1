#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the test suite and for trying the SLURM launchers:
#
#   sudo bash scripts/slurm_local.sh start     # install (Debian: slurm-wlm, munge) if missing, configure, start
#   bash scripts/slurm_local.sh status         # sinfo; exit 0 when the node takes jobs
#   sudo bash scripts/slurm_local.sh stop
#
# Idempotent: start on a running cluster only checks it. One node (this host, all its CPUs and memory), one
# partition "debug" (the default), no accounting (sacct then has nothing to show), no cgroups
# (proctrack/linuxproc, task/none), so it runs in containers. Its files: /etc/slurm/slurm.conf, the logs in
# /var/log/slurm/, the state in /var/spool/slurm*. Needs root (it writes /etc and starts daemons).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }

ready() {
  sinfo --noheader --nodes="$(hostname -s)" --format=%t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  echo "installing slurm-wlm and munge (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; then
    apt-get update -q >/dev/null  # a fresh machine may have no package lists yet
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
  fi
}

configure() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"  # MB, leaving some to the system
  mkdir -p /etc/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd /run/munge
  cat >"$CONF" <<EOF
# written by imbalance_lab's scripts/slurm_local.sh: a one-node cluster on $host
ClusterName=imbalance-lab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# a finished job leaves the queue quickly; a requeued one may start again at once
MinJobAge=30
KillWait=10
SchedulerParameters=bf_interval=1,sched_interval=2,sched_min_interval=100000
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
}

start() {
  if ready; then
    echo "slurm is running:"; sinfo; return
  fi
  install
  configure
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do
    if ready; then echo "slurm is running:"; sinfo; return; fi
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  echo "error: the node did not become ready in 30 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  for daemon in slurmd slurmctld munged; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  echo "slurm stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if ready; then sinfo; else echo "slurm is not running (or its node is not ready)"; exit 1; fi ;;
  -h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
