#!/usr/bin/env bash
# A real single-node Slurm on 127.0.0.1 for CI and for trying `--executor slurm` (docs/CLUSTER.md).
#
#   scripts/local-slurm.sh start   install Debian's slurmctld, slurmd, slurm-client and munge (if
#                                  missing, --no-install-recommends), write /etc/slurm/slurm.conf
#                                  for this machine and start munged, slurmctld and slurmd
#                                  without systemd; returns once the node is idle.
#   scripts/local-slurm.sh stop    cancel every job, then stop the daemons this script started,
#                                  by the PIDs it recorded (nothing is killed by name).
#   scripts/local-slurm.sh status  the daemons' PIDs and `sinfo`.
#
# Runs as root (it installs packages and writes /etc/slurm). State, logs and PIDs live in
# $LOCAL_SLURM_DIR (default /var/tmp/local-slurm). Everything listens on 127.0.0.1 only.
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/var/tmp/local-slurm}
CONF=/etc/slurm/slurm.conf
# The first line of a slurm.conf written here: a config without it is never overwritten.
MARK="# Written by breakeven scripts/local-slurm.sh"

# The PID recorded for daemon $1 if that process still runs the daemon (a stale PID file, or a
# PID reused by another program, does not count: slurmctld drops to the slurm user and cannot
# remove a root-owned PID file, so PID files are not trusted alone).
alive() {
    local name=$1 pid
    [ -f "$DIR/$name.pid" ] || return 1
    pid=$(cat "$DIR/$name.pid")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

install_packages() {
    local pkgs=(slurmctld slurmd slurm-client munge) missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    echo "local-slurm: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
    if [ -f "$CONF" ] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
        echo "local-slurm: $CONF exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    mkdir -p /etc/slurm "$DIR/ctld" "$DIR/spool" "$DIR/log"
    chown slurm:slurm "$DIR/ctld"
    chown slurm:slurm "$DIR/log"
    local host node
    host=$(hostname -s)
    # The node exactly as slurmd sees it (CPUs, sockets, cores, threads, memory); a layout that
    # differs from the hardware leaves the node drained.
    node=$(slurmd -C | head -n1 | sed 's/ UpTime=.*//')
    cat >"$CONF" <<EOF
$MARK for a single-node cluster on 127.0.0.1.
ClusterName=breakeven-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/log/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Ended jobs stay visible to scontrol/squeue for 5 minutes (no accounting database here).
MinJobAge=300
# A cancelled task gets SIGKILL 5 s after SIGTERM.
KillWait=5
InactiveLimit=0
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || { echo "local-slurm: run as root" >&2; exit 1; }
    install_packages
    mkdir -p "$DIR"
    write_config

    if ! alive munged >/dev/null; then
        [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        chown munge:munge /run/munge /var/lib/munge /var/log/munge
        setpriv --reuid=munge --regid=munge --init-groups munged --foreground >"$DIR/log/munged.out" 2>&1 &
        echo $! >"$DIR/munged.pid"
        for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
    fi
    if ! alive slurmctld >/dev/null; then
        # -i: ignore state left by an earlier cluster in $DIR (jobs of a killed CI run).
        slurmctld -D -i >"$DIR/log/slurmctld.out" 2>&1 &
        echo $! >"$DIR/slurmctld.pid"
    fi
    if ! alive slurmd >/dev/null; then
        slurmd -D >"$DIR/log/slurmd.out" 2>&1 &
        echo $! >"$DIR/slurmd.pid"
    fi
    # Wait for the node to be idle (under a second when the machine is quiet; up to 2 minutes,
    # for a first start on a loaded machine).
    local state=""
    for _ in $(seq 1200); do
        state=$(sinfo -h -o %t 2>/dev/null | head -n1 || true)
        [ "$state" = idle ] && break
        sleep 0.1
    done
    if [ "$state" != idle ]; then
        echo "local-slurm: the node is not idle (state: ${state:-no answer}); logs in $DIR/log" >&2
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        exit 1
    fi
    echo "local-slurm: up ($(sinfo -h -o '%N %c CPUs %m MB %t'))"
}

stop() {
    # Jobs first: their processes (slurmstepd) outlive slurmd.
    if alive slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 100); do
                [ -z "$(squeue -h -t running,completing -o %A 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    local name pid
    for name in slurmd slurmctld munged; do
        if pid=$(alive "$name"); then
            kill "$pid"
            for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            [ -d "/proc/$pid" ] && kill -9 "$pid"
        fi
        rm -f "$DIR/$name.pid"
    done
    echo "local-slurm: stopped"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        echo "$name: $(alive "$name" || echo 'not running')"
    done
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
