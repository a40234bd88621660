#!/usr/bin/env bash
# A real single-host SLURM cluster for diffscale's CI, from Debian packages (bookworm: SLURM 22.05).
#
#   .ci/slurm/setup.sh start    install what is missing, write the configs, (re)start every daemon,
#                               wait until all nodes are idle, submit one smoke job per partition
#   .ci/slurm/setup.sh stop     stop the daemons this script started (by pid file and name)
#   .ci/slurm/setup.sh reset    stop, then wipe SLURM's state, logs and accounting database
#   .ci/slurm/setup.sh status   daemons and nodes
#
# ACCOUNTING=slurmdbd (default) also runs MariaDB + slurmdbd, so `sacct` works: the SLURM profile's
# status command, and the audit's record of where every job ran. ACCOUNTING=none runs without
# (use profiles/slurm-noacct; records come from squeue/scontrol while MinJobAge keeps them).
#
# Layout: partitions cpu, a40, a100, k80, one virtual node each (node-a100 has two fake GPUs, so
# multi-GPU requests are exercised). Runs as root without systemd or cgroups (proctrack/linuxproc).
#
# Pitfalls this script handles (each one seen):
# - Debian's packages do not start daemons without systemd ("policy-rc.d denied"): started here.
# - slurmctld daemonizes and may die right after, returning 0: readiness is `scontrol ping`.
# - A node's DRAIN/DOWN state survives restarts: nodes are resumed until idle.
# - GPUs without File= are dropped and regular files rejected: char devices (1:3, like /dev/null).
# - slurmdbd.conf must be mode 600 and owned by SlurmUser.
# - AccountingStorageTRES=gres/gpu without slurmdbd makes slurmctld exit: separate accounting.conf.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACCOUNTING="${ACCOUNTING:-slurmdbd}"
DB_PASS="${DB_PASS:-diffscale-ci}"
GPU_DIR=/var/lib/diffscale-slurm/gpus
NODES=(node-cpu node-a40 node-a100 node-k80)
HOST="$(hostname -s)"

log() { printf '[slurm-setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"
case "$ACCOUNTING" in slurmdbd|none) ;; *) die "ACCOUNTING must be slurmdbd or none, not '$ACCOUNTING'";; esac

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_in() { [ -s "$1" ] && cat "$1" || true; }

# stop <process name> <pid file>...: TERM, then KILL after 10 s, only a live pid whose
# /proc/<pid>/comm is the expected name (a stale pid file never kills an unrelated process).
stop() {
  local name="$1" file pid; shift
  for file in "$@"; do
    [ -e "$file" ] || continue
    pid="$(pid_in "$file")"
    if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
      kill "$pid"
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
      alive "$pid" && kill -9 "$pid"
      log "stopped $name ($pid)"
    fi
    rm -f "$file"
  done
}

stop_all() {
  stop slurmd /run/slurmd-*.pid
  stop slurmctld /run/slurmctld.pid
  stop slurmdbd /run/slurmdbd.pid
  stop mariadbd /run/mysqld/mysqld.pid
  stop munged /run/munge/munged.pid
}

wait_until() {  # wait_until <seconds> <what> <command...>
  local seconds="$1" what="$2"; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "no $what after ${seconds}s"
}

install_packages() {
  local wanted=(slurmctld slurmd slurm-client munge) missing=() p
  [ "$ACCOUNTING" = slurmdbd ] && wanted+=(slurmdbd mariadb-server)
  for p in "${wanted[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  log "$(dpkg-query -W -f='${Package} ${Version}, ' "${wanted[@]}")"
}

render() {  # render <template> <destination>
  local cpus mem_mb
  cpus="$(nproc)"
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 3 / 4 ))
  sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
      -e "s|@GPU_DIR@|$GPU_DIR|g" -e "s|@DB_PASS@|$DB_PASS|g" "$1" > "$2"
}

write_configs() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/log/slurm "$GPU_DIR"
  for i in 0 1 2 3; do
    [ -c "$GPU_DIR/nvidia$i" ] || { rm -f "$GPU_DIR/nvidia$i"; mknod -m 666 "$GPU_DIR/nvidia$i" c 1 3; }
  done
  render "$HERE/slurm.conf.in" /etc/slurm/slurm.conf
  render "$HERE/gres.conf.in" /etc/slurm/gres.conf
  cp "$HERE/accounting-$ACCOUNTING.conf" /etc/slurm/accounting.conf
  # On a pure cgroup-v2 host slurmd may try to reach systemd over dbus and die; this is SLURM
  # 22.05's way out. (Hosts with a v1/hybrid hierarchy need nothing.)
  if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    printf 'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes\n' > /etc/slurm/cgroup.conf
  fi
  if [ "$ACCOUNTING" = slurmdbd ]; then
    render "$HERE/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf
    chown root:root /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
    mkdir -p /etc/mysql/mariadb.conf.d
    cp "$HERE/mariadb-slurmdbd.cnf" /etc/mysql/mariadb.conf.d/99-slurmdbd.cnf
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  alive "$(pid_in /run/munge/munged.pid)" || runuser -u munge -- /usr/sbin/munged
  wait_until 10 munged bash -c 'munge -n | unmunge'
}

start_accounting() {
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  if ! alive "$(pid_in /run/mysqld/mysqld.pid)"; then
    nohup /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      --log-error=/var/log/slurm/mariadb.err </dev/null >/dev/null 2>&1 &
  fi
  wait_until 60 MariaDB mariadb-admin ping
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  stop slurmdbd /run/slurmdbd.pid
  slurmdbd
  wait_until 60 slurmdbd sacctmgr -n show cluster
  sacctmgr -n -P show cluster format=cluster | grep -qx diffscale-ci || sacctmgr -i add cluster diffscale-ci >/dev/null
  sacctmgr -n -P show account format=account | grep -qx diffscale || sacctmgr -i add account diffscale Description=ci Organization=ci >/dev/null
  sacctmgr -n -P show assoc where user=root account=diffscale format=user | grep -qx root \
    || sacctmgr -i add user root Account=diffscale DefaultAccount=diffscale >/dev/null
}

all_idle() { sinfo -h -N -o '%N %t' | awk '$2 !~ /^(idle|mix|alloc)$/ {bad = 1} END {exit bad}'; }

start_slurm() {
  stop slurmd /run/slurmd-*.pid
  stop slurmctld /run/slurmctld.pid
  slurmctld
  wait_until 30 slurmctld scontrol ping
  local node
  for node in "${NODES[@]}"; do
    mkdir -p "/var/spool/slurmd/$node"
    slurmd -N "$node"
  done
  for _ in $(seq 120); do
    all_idle && break
    for node in $(sinfo -h -N -o '%N %t' | awk '$2 ~ /drain|down|fail/ {print $1}'); do
      scontrol update nodename="$node" state=resume 2>/dev/null || true
    done
    sleep 0.5
  done
  all_idle || { sinfo -N -l; scontrol show node | grep -E 'NodeName|Reason'; die "nodes are not idle"; }
}

smoke_test() {
  # One job per partition with each GPU request style the profile can produce.
  local out
  out="$(srun -p cpu -n1 -t 1 bash -c 'echo "$SLURM_JOB_PARTITION/$SLURMD_NODENAME"')"
  out+=" $(srun -p a40 --gres=gpu:a40:1 -t 1 bash -c 'echo "$SLURM_JOB_PARTITION/$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES"')"
  out+=" $(srun -p a100 --gpus=a100:2 -t 1 bash -c 'echo "$SLURM_JOB_PARTITION/$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES"')"
  out+=" $(srun -p k80 --gres=gpu:k80:1 -t 1 bash -c 'echo "$SLURM_JOB_PARTITION/$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES"')"
  log "smoke jobs ran on: $out"
  if srun -p a40 --gres=gpu:a100:1 -t 1 true 2>/dev/null; then
    die "partition a40 accepted a job asking for an a100: the partition/GPU mapping is not enforced"
  fi
}

case "${1:-start}" in
  start)
    t0=$SECONDS
    install_packages
    write_configs
    start_munge
    [ "$ACCOUNTING" = slurmdbd ] && start_accounting
    start_slurm
    sinfo -o '%P %a %D %t %N %G'
    smoke_test
    log "cluster ready in $((SECONDS - t0)) s (ACCOUNTING=$ACCOUNTING)"
    ;;
  stop) stop_all ;;
  reset)
    stop slurmd /run/slurmd-*.pid
    stop slurmctld /run/slurmctld.pid
    stop slurmdbd /run/slurmdbd.pid
    if alive "$(pid_in /run/mysqld/mysqld.pid)"; then mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;"; fi
    stop_all
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
    log "SLURM state, logs and accounting database wiped"
    ;;
  status)
    for file in /run/munge/munged.pid /run/mysqld/mysqld.pid /run/slurmdbd.pid /run/slurmctld.pid /run/slurmd-*.pid; do
      if [ -e "$file" ]; then echo "$file $(pid_in "$file") $(alive "$(pid_in "$file")" && echo alive || echo dead)"; fi
    done
    sinfo -N -o '%N %P %t %G' || true
    ;;
  *) die "usage: $0 start|stop|reset|status" ;;
esac
