#!/usr/bin/env bash
# scripts/local-slurm.sh — a REAL single-node SLURM cluster on localhost for stemsweep's tests
# (submitit / hydra-submitit-launcher), without systemd, cgroups or munge. Debian 12 packages
# (Slurm 22.05). Needs root. `make test` (scripts/run-tests.sh) drives it; by hand:
#
#   scripts/local-slurm.sh up       install what is missing, write the config, start the daemons,
#                                   wait until the node is idle (0.1 s if already up)
#   eval "$(scripts/local-slurm.sh env)"   PATH (client wrappers + scontrol shim first) and SLURM_CONF
#   scripts/local-slurm.sh status   daemons and sinfo; exit 0 when the node is usable
#   scripts/local-slurm.sh down     cancel all jobs, stop exactly the daemons `up` recorded
#
# Everything lives in $STEMSWEEP_SLURM_DIR: the config (etc/slurm.conf, not /etc/slurm, so it
# cannot clash with a system or another local cluster), state, logs (log/, the previous run's in
# log.prev/), one <daemon>.pid per daemon, and bin/ with wrappers for the Slurm client commands
# that point them at this config. bin/scontrol also ignores SIGTERM: on one host submitit's
# in-job `scontrol requeue` can be killed by the SIGTERM the requeue itself sends, failing the job.
# Jobs inherit PATH from the submitter, so put bin/ first in PATH before submitting.
#
# Knobs (environment):
#   STEMSWEEP_SLURM_DIR          state folder                                (/tmp/stemsweep-slurm)
#   STEMSWEEP_SLURM_CPUS         CPUs the node advertises, whatever the real count        (4)
#   STEMSWEEP_SLURM_PARTITION    partition name                                           (debug)
#   STEMSWEEP_SLURM_ACCOUNTING   1 = slurmdbd + MariaDB, so sacct works. submitit needs it to see
#                                cancelled or killed jobs; without it their result() hangs.  (1)
#   STEMSWEEP_SLURM_PORT_BASE    slurmctld, slurmd, slurmdbd ports = base, base+1, base+2  (6917)
#   STEMSWEEP_SLURM_DB_PORT      MariaDB port (bound to 127.0.0.1)                        (3317)
#   STEMSWEEP_SLURM_CRED_EXPIRE  s; also how long a requeued job waits before it restarts  (5)
#   STEMSWEEP_SLURM_SCHED_PARAMS SchedulerParameters     (batch_sched_delay=0,sched_interval=2,bf_interval=1)
#   STEMSWEEP_SLURM_INSTALL      1 = apt-get install missing packages                     (1)
#   STEMSWEEP_SLURM_FORCE        1 = `up` restarts even when already up                   (0)
set -euo pipefail +m  # no job control: see start()

DIR=${STEMSWEEP_SLURM_DIR:-/tmp/stemsweep-slurm}
CPUS=${STEMSWEEP_SLURM_CPUS:-4}
PART=${STEMSWEEP_SLURM_PARTITION:-debug}
ACCT=${STEMSWEEP_SLURM_ACCOUNTING:-1}
PORT_BASE=${STEMSWEEP_SLURM_PORT_BASE:-6917}
CTLD_PORT=$PORT_BASE SLURMD_PORT=$((PORT_BASE + 1)) DBD_PORT=$((PORT_BASE + 2))
DB_PORT=${STEMSWEEP_SLURM_DB_PORT:-3317}
CRED_EXPIRE=${STEMSWEEP_SLURM_CRED_EXPIRE:-5}
SCHED_PARAMS=${STEMSWEEP_SLURM_SCHED_PARAMS:-batch_sched_delay=0,sched_interval=2,bf_interval=1}
INSTALL=${STEMSWEEP_SLURM_INSTALL:-1}
FORCE=${STEMSWEEP_SLURM_FORCE:-0}
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF
DAEMONS=(slurmd slurmctld slurmdbd mariadbd)  # every daemon this script may start, stop order

log() { echo "[local-slurm $(date +%T)] $*" >&2; }

alive() {  # alive NAME: $DIR/NAME.pid holds a live process whose name is NAME
  local pid
  pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mix|alloc)$ ]]; }

stop_recorded() {  # SIGTERM all recorded daemons at once (slurmctld takes 2-4 s), wait 15 s, SIGKILL
  local d pid pids=()
  for d in "${DAEMONS[@]}"; do
    if alive "$d"; then
      pid=$(cat "$DIR/$d.pid"); log "stopping $d ($pid)"
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$DIR/$d.pid"
  done
  local left=1
  for _ in $(seq 150); do
    left=0; for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && left=1; done
    ((left)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    [[ -d /proc/$pid ]] && { log "$pid ignored SIGTERM: SIGKILL"; kill -9 "$pid" 2>/dev/null; }
  done
  return 0
}

cancel_jobs() {  # while the controller answers: cancel everything, let the jobs end
  alive slurmctld && node_ready || return 0
  local p
  for p in $(sinfo -h -o %R 2>/dev/null); do scancel --quiet --partition="$p" 2>/dev/null || true; done
  for _ in $(seq 150); do  # KillWait=5: a job ignoring SIGTERM gets SIGKILL 5 s later
    [[ -z "$(squeue -h -t R,CG,S 2>/dev/null)" ]] && return 0
    sleep 0.1
  done
  log "jobs still running after 15 s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
}

show_logs() {
  local f
  for f in "$DIR"/log/*; do [[ -f $f ]] && { echo "---- $f" >&2; tail -n 20 "$f" >&2; }; done
  return 0
}

# The knobs `up` was started with; a later `up` with other knobs restarts.
signature() { echo "cpus=$CPUS part=$PART acct=$ACCT ports=$PORT_BASE,$DB_PORT cred=$CRED_EXPIRE sched=$SCHED_PARAMS host=$(hostname -s)"; }

is_up() {
  local d
  for d in slurmctld slurmd; do alive "$d" || return 1; done
  if ((ACCT == 1)); then for d in mariadbd slurmdbd; do alive "$d" || return 1; done; fi
  [[ "$(cat "$DIR/signature" 2>/dev/null)" == "$(signature)" ]] && node_ready
}

install_packages() {
  local p missing=() pkgs=(slurmctld slurmd slurm-client slurm-wlm-basic-plugins)
  ((ACCT == 1)) && pkgs+=(slurmdbd slurm-wlm-mysql-plugin mariadb-server)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $INSTALL == 1 ]] || { log "missing packages: ${missing[*]} (STEMSWEEP_SLURM_INSTALL=0)"; return 1; }
  log "installing ${missing[*]}"
  # Without a policy-rc.d the packages' init scripts would start the daemons with the stock config.
  local policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}")
  local rc=0
  "${apt[@]}" >"$DIR/apt.log" 2>&1 || { apt-get update -q >>"$DIR/apt.log" 2>&1; "${apt[@]}" >>"$DIR/apt.log" 2>&1; } || rc=$?
  ((policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || { tail -n 20 "$DIR/apt.log" >&2; log "apt-get install failed"; }
  return "$rc"
}

start() {  # start NAME CMD...: run CMD in the foreground of a background job, record its PID.
  # Closing every inherited fd > 2 keeps the daemons from holding the caller's pipes (CI) or locks.
  # setsid: a new session, so a Ctrl-C or hang-up of the caller's terminal does not reach them
  # (slurmctld/slurmd exit on SIGINT; `down` must cancel the jobs first). This script runs
  # without job control, so the subshell is no group leader and setsid execs without forking.
  local name=$1; shift
  (
    for fd in "/proc/$BASHPID/fd/"*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    exec setsid "$@"
  ) </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_taken() { ! port_free "$1"; }

# gone NAME: the process recorded for NAME has exited. Unlike `alive`, no name check: right after
# `start`, the recorded PID may still be the subshell that is about to exec the daemon (a busy machine
# makes that window long enough to see).
gone() { local pid; pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 0; ! kill -0 "$pid" 2>/dev/null; }

wait_for() {  # wait_for WHAT DAEMON TEST...: up to 15 s for TEST to pass while DAEMON lives
  local what=$1 daemon=$2; shift 2
  for _ in $(seq 150); do
    "$@" && return 0
    gone "$daemon" && break
    sleep 0.1
  done
  log "$what"; return 1
}

write_config() {
  local node=$1 hw mem
  hw=$(slurmd -C | head -n1)  # "NodeName=vm CPUs=2 ... RealMemory=24105"
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$((mem * 95 / 100))  # headroom, so the node never drains for "Low RealMemory"
  local acct_lines="AccountingStorageType=accounting_storage/none"
  ((ACCT == 1)) && acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT"
  cat >"$CONF" <<EOF
# generated by scripts/local-slurm.sh: single-node test cluster on localhost
ClusterName=stemsweep
# State is wiped at each start; a clock-derived first id keeps ids from repeating, since a
# reused id + a reused submitit folder (%j) returns an old run's result pickle.
FirstJobId=$(($(date +%s) % 60000000 + 1))
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
# no munge. cred_expire is also the wait before a requeued job may start again (default 120 s)
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no systemd, no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$acct_lines
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# fast turnaround for tiny test jobs: no 3 s batch delay, scheduler every 2 s (requeue in ~7 s)
SchedulerType=sched/backfill
SchedulerParameters=$SCHED_PARAMS
# CPUs only: with memory consumable a job without --mem takes the whole node
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# impossible requests fail at submit instead of pending forever
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
MessageTimeout=10
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=$PART Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  ((ACCT == 1)) || return 0
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
# generated by scripts/local-slurm.sh
AuthType=auth/none
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

write_bin() {  # client wrappers that find this cluster's config; scontrol also ignores SIGTERM
  local c real
  mkdir -p "$DIR/bin"
  for c in sinfo squeue sbatch scancel sacct sacctmgr scontrol srun salloc sstat sprio sshare sdiag; do
    real=$(PATH=/usr/bin:/usr/sbin:/bin:/sbin command -v "$c") || continue
    {
      echo '#!/bin/sh'
      echo "export SLURM_CONF='$CONF'"
      [[ $c == scontrol ]] && echo 'trap "" TERM  # a self-requeue from inside a job SIGTERMs us'
      echo "exec '$real' \"\$@\""
    } >"$DIR/bin/$c"
    chmod +x "$DIR/bin/$c"
  done
}

up() {
  if [[ $FORCE != 1 ]] && command -v sinfo >/dev/null && is_up; then
    log "already up: $(for d in "${DAEMONS[@]}"; do alive "$d" && printf '%s=%s ' "$d" "$(cat "$DIR/$d.pid")"; done)"
    return 0
  fi
  mkdir -p "$DIR"
  install_packages
  cancel_jobs
  stop_recorded  # only what an earlier `up` recorded

  # From here on, a failure prints the logs and stops what was started.
  trap 'rc=$?; if ((rc)); then show_logs; stop_recorded; log "up failed"; fi' EXIT
  trap 'exit 130' INT TERM

  # fresh state every time: old jobs, DB rows and logs must not leak into this run
  rm -rf "${DIR:?}"/{state,spool,mysql,run,bin,log.prev}
  [[ -d $DIR/log ]] && mv "$DIR/log" "$DIR/log.prev"
  mkdir -p "$DIR"/{state,spool,run,log,etc}
  local p ports=("$CTLD_PORT" "$SLURMD_PORT")
  ((ACCT == 1)) && ports+=("$DBD_PORT" "$DB_PORT")
  for p in "${ports[@]}"; do
    port_free "$p" || { log "port $p is taken (set STEMSWEEP_SLURM_PORT_BASE / _DB_PORT)"; exit 1; }
  done
  local node
  node=$(hostname -s)
  write_config "$node"
  write_bin
  signature >"$DIR/signature"
  log "config $CONF: node $node, CPUs=$CPUS, partition=$PART, accounting=$ACCT, ports $CTLD_PORT-$DBD_PORT"

  if ((ACCT == 1)); then
    local sock=$DIR/mysql/mysqld.sock
    sql() { mariadb --no-defaults -S "$sock" -uroot -e "$1" >/dev/null 2>&1; }
    mkdir -p "$DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1
    start mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --socket="$sock" \
      --pid-file="$DIR/run/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      --log-error="$DIR/log/mariadb.log"
    wait_for "mariadbd did not start" mariadbd sql 'select 1'
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    start slurmdbd slurmdbd -D
    # slurmctld exits ("no TRES") if it starts with an empty database before slurmdbd listens
    wait_for "slurmdbd did not start" slurmdbd port_taken "$DBD_PORT"
  fi
  start slurmctld slurmctld -D -c -i -f "$CONF"
  start slurmd slurmd -D -c -N "$node" -f "$CONF"

  local d i t0=$SECONDS
  for i in $(seq 300); do
    if node_ready; then
      log "node $node $(node_state) after $((SECONDS - t0)) s: $(for d in "${DAEMONS[@]}"; do alive "$d" && printf '%s=%s ' "$d" "$(cat "$DIR/$d.pid")"; done)"
      return 0
    fi
    for d in slurmctld slurmd; do gone "$d" && { log "$d died"; exit 1; }; done
    if [[ "$(node_state)" =~ ^(down|drain) ]] && ((i % 20 == 0)); then
      scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.1
  done
  sinfo -N -l >&2 || true
  log "node did not become idle in 30 s"
  exit 1
}

down() {
  cancel_jobs
  stop_recorded
}

status() {
  local d rc=0
  for d in "${DAEMONS[@]}"; do
    if alive "$d"; then echo "$d: running ($(cat "$DIR/$d.pid"))"; else echo "$d: stopped"; fi
  done
  if command -v sinfo >/dev/null && node_ready; then sinfo; else echo "node: not usable"; rc=1; fi
  return "$rc"
}

lock() {  # one up/down at a time (the daemons close this fd, see start)
  mkdir -p "$DIR"; exec 9>"$DIR/lock"
  flock -w 120 9 || { log "another local-slurm.sh holds $DIR/lock"; exit 1; }
}

# shellcheck disable=SC2016  # env: $PATH is for the caller's eval to expand
case ${1:-} in
  up) [[ $EUID -eq 0 ]] || { log "must run as root"; exit 1; }; lock; up ;;
  down) lock; down ;;
  status) status ;;
  env) printf 'export PATH=%q:"${PATH}" SLURM_CONF=%q\n' "$DIR/bin" "$CONF" ;;  # the caller's eval expands PATH
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
