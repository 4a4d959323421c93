#!/usr/bin/env bash
# A real single-node SLURM on localhost, for CI and for trying afl's SLURM path on a workstation.
#
#   bash cluster/local-slurm.sh up       # install (if needed), configure, start; idempotent
#   bash cluster/local-slurm.sh status   # sinfo, or "not running" (exit 1)
#   bash cluster/local-slurm.sh down     # cancel jobs, stop exactly what `up` started
#
# Debian/Ubuntu with SLURM 22.05-era packages (slurm-wlm, slurmdbd, munge, mariadb-server), run as
# root, no systemd needed: every daemon is a plain background process whose PID this script records
# under $AFL_SLURM_PREFIX/pids. Accounting (sacct, which submitit polls) goes through slurmdbd and a
# private MariaDB instance (own datadir, socket and port under the prefix, so a MariaDB already on
# the machine is neither used nor disturbed). A munged that already answers is reused, not replaced.
#
# Environment:
#   AFL_SLURM_PREFIX   state, logs, pids and the real config files      (default /tmp/afl-slurm)
#   AFL_SLURM_DB_PORT  TCP port of the private MariaDB, bound to 127.0.0.1 (default 3307)
#   AFL_SLURM_TIMEOUT  seconds to wait for each daemon                   (default 60)
#
# Partitions: `debug` (default) and `urgent`, whose jobs preempt `debug` jobs with REQUEUE; at
# preemption SLURM sends the job's --signal (USR2 for submitit), so a Checkpointable job saves its
# state and resumes. `scancel --signal=USR2 JOBID` does the same by hand (`scontrol requeue` does
# not checkpoint). Memory limits are not enforced (no cgroup plugins).
set -euo pipefail

PREFIX=${AFL_SLURM_PREFIX:-/tmp/afl-slurm}
DB_PORT=${AFL_SLURM_DB_PORT:-3307}
TIMEOUT=${AFL_SLURM_TIMEOUT:-60}
CLUSTER=afl-local
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; `down` uses the reverse
PIDS=$PREFIX/pids
LOG=$PREFIX/log
DB_RUN=$PREFIX/mysqld          # socket and pid file of the private MariaDB (owned by mysql)
DB_SOCK=$DB_RUN/mysqld.sock
DB_PASS=afl-local-slurm      # only reachable from 127.0.0.1, for a throwaway accounting database
export DEBIAN_FRONTEND=noninteractive

say() { echo "[local-slurm] $*"; }
die() { echo "[local-slurm] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- process bookkeeping
# A PID file counts only if the process is alive AND has the expected name (guards against PID
# reuse after a reboot or a crash).
pid_of() { # pid_of <daemon> -> prints pid, returns 0 if our recorded process is alive
    local f=$PIDS/$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

start_bg() { # start_bg <daemon> <cmd...>: own session, no tty, output to $LOG/<daemon>.out
    local name=$1; shift
    # 9>&-: the daemon must not inherit (and so hold forever) the lock of this script.
    setsid "$@" </dev/null >"$LOG/$name.out" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$PIDS/$name.pid"
    STARTED+=("$name")
    say "started $name (pid $pid)"
}

logs_of() { # the log files worth showing when <daemon> fails
    case $1 in
        munged)   echo "$LOG/munged.out /var/log/munge/munged.log" ;;
        mariadbd) echo "$LOG/mariadbd.out $LOG/mariadbd.err" ;;
        *)        echo "$LOG/$1.out $LOG/$1.log" ;;
    esac
}

exited() { # exited <daemon>: the process start_bg recorded is gone (or a zombie)
    local pid state
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
    state=$(sed -E 's/.*\) ([A-Za-z]) .*/\1/' /proc/"$pid"/stat 2>/dev/null) || return 0
    [ -z "$state" ] || [ "$state" = Z ]
}

wait_for() { # wait_for <daemon> <what> <cmd...>: poll cmd until it succeeds, the daemon dies, or TIMEOUT
    local name=$1 what=$2 t=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        # Not pid_of: until setsid and setpriv have exec'd into the daemon, its comm is theirs.
        if exited "$name"; then
            fail_with_logs "$name" "$name exited while waiting for $what"
        fi
        if (( SECONDS - t >= TIMEOUT )); then
            fail_with_logs "$name" "timed out after ${TIMEOUT}s waiting for $what"
        fi
        sleep 0.2
    done
    say "$what: ok ($((SECONDS - t))s)"
}

fail_with_logs() {
    local name=$1 msg=$2 f
    echo "[local-slurm] ERROR: $msg" >&2
    for f in $(logs_of "$name"); do
        [ -s "$f" ] || continue
        echo "[local-slurm] ---- last lines of $f" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

stop_one() { # stop_one <daemon>: SIGTERM, wait up to 30 s, then SIGKILL; only our recorded PID
    local name=$1 pid i
    if pid=$(pid_of "$name"); then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM for 30s, sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
}

ctld_answers() { pid_of slurmctld >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q UP; }

is_running() { # all of our daemons alive (munged/mariadbd only if we started them) and slurmctld answers
    local d
    for d in "${DAEMONS[@]}"; do
        case $d in munged|mariadbd) [ -f "$PIDS/$d.pid" ] || continue ;; esac
        pid_of "$d" >/dev/null || return 1
    done
    ctld_answers
}

any_ours_alive() { local d; for d in "${DAEMONS[@]}"; do pid_of "$d" >/dev/null && return 0; done; return 1; }

lock() { # one up/down at a time per prefix
    mkdir -p "$PREFIX"
    exec 9>"$PREFIX/local-slurm.lock"
    flock -w 300 9 || die "another local-slurm.sh has held $PREFIX/local-slurm.lock for 300 s"
}

# ---------------------------------------------------------------- down
do_down() {
    local d ids n i
    if ctld_answers; then
        ids=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$ids" ]; then
            n=$(wc -w <<<"$ids")
            say "cancelling $n job(s) so that no job step outlives slurmd"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [ -z "$(squeue -h -t R,CG,S -o %i 2>/dev/null)" ] && break; sleep 0.2
            done
        fi
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_one "${DAEMONS[i]}"; done
}

# ---------------------------------------------------------------- up
install_packages() {
    local p missing=()
    for p in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && { say "packages present"; return; }
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
    local t=$SECONDS
    say "installing ${missing[*]}"
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        say "no package lists: apt-get update"
        apt-get update -qq
    fi
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG/apt.out" 2>&1; then
        say "install failed with the current package lists (see $LOG/apt.out): apt-get update and retry"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG/apt.out" 2>&1 \
            || { tail -n 30 "$LOG/apt.out" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    say "packages installed ($((SECONDS - t))s)"
}

check_no_foreign_slurm() {
    local d pids
    for d in slurmctld slurmd slurmdbd; do
        pids=$(pgrep -x "$d" || true)
        [ -z "$pids" ] && continue
        die "a $d that this script did not start under $PREFIX is running (pid $(echo $pids));" \
            "stop it first (another prefix: AFL_SLURM_PREFIX=... $0 down;" \
            "systemd: systemctl disable --now slurmctld slurmd slurmdbd)"
    done
}

link_config() { # link_config <file>: /etc/slurm/<file> -> $PREFIX/etc/<file>, never clobbering a real config
    local dst=/etc/slurm/$1 src=$PREFIX/etc/$1
    if [ -e "$dst" ] && [ ! -L "$dst" ]; then
        die "$dst is a real file (another SLURM setup?); move it away first"
    fi
    ln -sfn "$src" "$dst"
}

write_config() {
    local host node mem headroom
    host=$(hostname -s)
    # Node line from the hardware probe (keeps Sockets/Cores/Threads consistent), less some memory
    # so that slurmd does not drain the node for having less RealMemory than configured.
    node=$(slurmd -C | head -n 1)
    [[ $node =~ ^NodeName=([^ ]+).*RealMemory=([0-9]+) ]] || die "unexpected 'slurmd -C' output: $node"
    [ "${BASH_REMATCH[1]}" = "$host" ] || die "slurmd -C says NodeName=${BASH_REMATCH[1]}, hostname -s says $host"
    mem=${BASH_REMATCH[2]}
    headroom=$(( mem > 8192 ? 1024 : mem / 8 ))
    node=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem - headroom))/" <<<"$node")

    cat >"$PREFIX/etc/slurm.conf" <<CONF
# Written by cluster/local-slurm.sh; regenerated on every \`up\`.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
# Job credential lifetime, also the delay before a requeued job may start again (default 120 s).
AuthInfo=cred_expire=10
StateSaveLocation=$PREFIX/state/ctld
SlurmdSpoolDir=$PREFIX/state/d
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups: works in containers and VMs without delegation; limits are not enforced.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node's memory and jobs run one at a time.
DefMemPerCPU=1024
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
# Preemption: jobs in "urgent" requeue jobs in "debug"; the job's --signal (submitit: USR2) is sent first.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF

    cat >"$PREFIX/etc/slurmdbd.conf" <<CONF
# Written by cluster/local-slurm.sh; regenerated on every \`up\`.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$PREFIX/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
    chown slurm:slurm "$PREFIX/etc/slurmdbd.conf"
    chmod 600 "$PREFIX/etc/slurmdbd.conf"
    # Clients must find the config at the compiled-in path: Snakemake's SLURM jobstep strips SLURM_*
    # (SLURM_CONF included) before calling srun.
    mkdir -p /etc/slurm
    link_config slurm.conf
    link_config slurmdbd.conf
}

start_munge() {
    if timeout 5 bash -c 'munge -n | unmunge' >/dev/null 2>&1; then
        say "munged already answers: reusing it"
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    # --force: a socket left behind by a munged killed with SIGKILL must not block the restart.
    start_bg munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F --force
    wait_for munged "munge credentials" bash -c 'munge -n | unmunge'
}

db() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCK" -uroot "$@"; }

start_mariadb() {
    local datadir=$PREFIX/mysql fresh=0
    if [ ! -d "$datadir/mysql" ]; then
        say "initialising a private MariaDB datadir in $datadir"
        rm -rf "$datadir"
        install -d -o mysql -g mysql -m 750 "$datadir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$datadir" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install-db.out" 2>&1 \
            || { tail -n 30 "$LOG/mariadb-install-db.out" >&2; die "mariadb-install-db failed"; }
        fresh=1
    fi
    install -d -o mysql -g mysql -m 755 "$DB_RUN"
    touch "$LOG/mariadbd.err"; chown mysql:mysql "$LOG/mariadbd.err"
    # --no-defaults: ignore /etc/mysql (socket, port, bind address of a system MariaDB).
    start_bg mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$datadir" \
        --socket="$DB_SOCK" --pid-file="$DB_RUN/mariadbd.pid" --log-error="$LOG/mariadbd.err" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --innodb-buffer-pool-size=512M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
    wait_for mariadbd "MariaDB on 127.0.0.1:$DB_PORT" db -e 'SELECT 1'
    if (( fresh )) || ! db -N -e "SELECT 1 FROM mysql.user WHERE user='slurm'" | grep -q 1; then
        db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
               CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
               FLUSH PRIVILEGES;"
    fi
}

node_ready() { # the node answers and is usable (no trailing '*', not down/drained)
    local s; s=$(sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null | head -n 1)
    [[ $s =~ ^(idle|mixed|allocated|completing)$ ]]
}

cluster_registered() { sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }

on_up_exit() {
    local rc=$?
    (( rc == 0 )) && return
    if (( ${#STARTED[@]} )); then
        echo "[local-slurm] up failed: stopping what this run started (logs stay in $LOG)" >&2
        do_down >&2 || true
    fi
}

do_up() {
    local t0=$SECONDS
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts system daemons)"
    lock
    if is_running; then
        say "already running (prefix $PREFIX)"
        sinfo
        exit 0
    fi
    if any_ours_alive; then
        say "found a partial cluster from an earlier run: stopping it first"
        do_down
    fi
    mkdir -p "$PREFIX"/{etc,run,state/ctld,state/d} "$PIDS" "$LOG"
    install_packages
    check_no_foreign_slurm
    chown slurm:slurm "$PREFIX"/state/ctld "$PREFIX"/state/d "$PREFIX"/run "$LOG"
    chmod 755 "$PREFIX" "$PREFIX"/run "$LOG"
    write_config

    STARTED=()
    trap on_up_exit EXIT
    start_munge
    start_mariadb
    # SLURM daemons in the foreground (-D), backgrounded by us, so that the recorded PIDs are theirs.
    start_bg slurmdbd /usr/sbin/slurmdbd -D
    wait_for slurmdbd "slurmdbd" sacctmgr -n list cluster
    start_bg slurmctld /usr/sbin/slurmctld -D
    wait_for slurmctld "slurmctld" ctld_answers
    start_bg slurmd /usr/sbin/slurmd -D
    wait_for slurmd "node $(hostname -s) ready" node_ready
    # slurmctld registers the cluster (and root's association) in slurmdbd on first contact.
    wait_for slurmctld "cluster registered in slurmdbd" cluster_registered
    trap - EXIT
    say "SLURM ready after $((SECONDS - t0))s (prefix $PREFIX, logs in $LOG)"
    sinfo
}

do_status() {
    if is_running; then
        sinfo
        echo
        squeue
    else
        say "not running (prefix $PREFIX)"
        exit 1
    fi
}

case ${1:-} in
    up)     do_up ;;
    down)   [ "$(id -u)" -eq 0 ] || die "run as root"
            lock
            if any_ours_alive; then do_down; say "down"; else say "not running: nothing to stop"; fi ;;
    status) do_status ;;
    *)      echo "usage: $0 up|down|status   (prefix: \$AFL_SLURM_PREFIX, default /tmp/afl-slurm)" >&2
            exit 2 ;;
esac
