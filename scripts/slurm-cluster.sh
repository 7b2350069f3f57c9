#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `zoo slurm submit` and for the tests.
#   bash scripts/slurm-cluster.sh          install slurm-wlm + munge if missing (apt-get, root), start
#   bash scripts/slurm-cluster.sh stop     stop the daemons this script started
#   bash scripts/slurm-cluster.sh status   exit 0 when the cluster answers
# It writes /etc/slurm/slurm.conf (Debian's default path, so sbatch/srun/scontrol find it without
# SLURM_CONF) and refuses to touch one it did not write, so a real cluster's config is never lost.
# The node is the machine itself at 127.0.0.1 with ZOO_SLURM_CPUS (default 8) CPUs: more than the
# machine may have on purpose, so a sweep's array tasks can run side by side (nothing is bound:
# proctrack/linuxproc and task/none need no cgroups, which containers often lack).
set -euo pipefail

mode=${1:-start}
conf=/etc/slurm/slurm.conf
marker="# written by zoo-launch scripts/slurm-cluster.sh"
state=/var/spool/zoo-slurm
run=/run/zoo-slurm
logs=/var/log/zoo-slurm
node=$(hostname -s)
cpus=${ZOO_SLURM_CPUS:-8}

say() { echo "[slurm-cluster] $*"; }
die() { echo "error: $*" >&2; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # stop_pidfile NAME FILE: TERM, then KILL after 10 s
    local name=$1 file=$2 pid
    pid_alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
    say "stopped $name ($pid)"
}

stop() {
    stop_pidfile slurmd "$run/slurmd.pid"
    stop_pidfile slurmctld "$run/slurmctld.pid"
    if [ -f "$run/munged.ours" ]; then
        stop_pidfile munged /run/munge/munged.pid
        rm -f "$run/munged.ours"
    fi
}

answers() { timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "Slurm is not installed and installing it needs root: run this script as root (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get here: install slurm-wlm and munge by hand"
    say "installing slurm-wlm and munge with apt-get (once; about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
    if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
        die "$conf exists and was not written by this script; not touching a real cluster's config"
    fi
    mkdir -p /etc/slurm "$state/ctld" "$state/d" "$run" "$logs"
    cat >"$conf.tmp" <<EOF
$marker
ClusterName=zoo
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# Look at pending jobs every second (default 60), so a requeued job starts as soon as it may.
SchedulerParameters=sched_interval=1
JobRequeue=1
ReturnToService=2
# Use the CPU count below even where the machine has fewer cores.
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf.tmp" "$conf"
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged is already running (ours or the system's)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --force
    touch "$run/munged.ours"  # so `stop` stops only a munged this script started
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

start() {
    install
    if [ -f "$conf" ] && grep -qF "$marker" "$conf" && answers; then
        say "already running"
        return 0
    fi
    write_conf
    start_munge
    # -c: start from a clean state (no jobs left over from an earlier session).
    pid_alive "$run/slurmctld.pid" || slurmctld -c -f "$conf"
    pid_alive "$run/slurmd.pid" || slurmd -f "$conf"
    for _ in $(seq 150); do
        answers && break
        sleep 0.2
    done
    answers || die "slurmctld does not answer (see $logs/slurmctld.log)"
    for _ in $(seq 150); do
        node_state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n1)
        case $node_state in
            idle*|mixed*|allocated*) say "started: node $node with $cpus CPUs is $node_state"; return 0 ;;
            down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    die "node $node did not become idle (state '${node_state:-?}'; see $logs/slurmd.log)"
}

case $mode in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) die "unknown mode '$mode': use start, stop or status" ;;
esac
