#!/usr/bin/env bash
# Stop the single-node SLURM cluster that tests/cluster/start.sh started.
#
# Ends only the daemons named by the PID files under $ABLATION_LAB_SLURM_DIR (default
# /tmp/ablation-lab-slurm), in reverse start order, after cancelling jobs still queued.
# A daemon that was already running before start.sh (and so has no PID file there) stays up.
set -uo pipefail

BASE=${ABLATION_LAB_SLURM_DIR:-/tmp/ablation-lab-slurm}

# Jobs left by an interrupted run would otherwise be requeued at the next start.
if [ -s "$BASE/pids/slurmctld.pid" ] && kill -0 "$(cat "$BASE/pids/slurmctld.pid")" 2>/dev/null; then
    scancel --user=root --full 2>/dev/null || true
fi

stop_daemon() {
    local name=$1 pid_file=$2 pid
    [ -s "$pid_file" ] || return 0
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline"; then
        kill -TERM "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
            kill -KILL "$pid"
        fi
    fi
    rm -f "$pid_file"
}

stop_daemon slurmd "$BASE/pids/slurmd.pid"
stop_daemon slurmctld "$BASE/pids/slurmctld.pid"
stop_daemon slurmdbd "$BASE/pids/slurmdbd.pid"
stop_daemon mariadbd "$BASE/pids/mariadbd.pid"
stop_daemon munged "$BASE/munge/munged.pid"
echo "SLURM stopped (daemons started by tests/cluster/start.sh)"
