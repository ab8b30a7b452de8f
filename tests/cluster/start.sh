#!/usr/bin/env bash
# Start a single-node SLURM cluster (with accounting) on this Debian machine, without systemd.
#
#   tests/cluster/start.sh      # installs the packages if missing, configures, starts
#   tests/cluster/stop.sh       # ends only the daemons this script started (by PID file)
#
# Daemons: munged, mariadbd, slurmdbd, slurmctld, slurmd. Accounting (slurmdbd) matters:
# without it `sacct` fails and the Snakemake SLURM plugin waits forever for finished jobs.
# State, spool, logs and PID files live under $ABLATION_LAB_SLURM_DIR (default
# /tmp/ablation-lab-slurm); the configs go to /etc/slurm, marked as written by this script.
# Must run as root (it installs packages and starts daemons as their users).
set -Eeuo pipefail

BASE=${ABLATION_LAB_SLURM_DIR:-/tmp/ablation-lab-slurm}
CLUSTER=ablationlab
ACCOUNT=${ABLATION_LAB_SLURM_ACCOUNT:-ablation}
PARTITION=${ABLATION_LAB_SLURM_PARTITION:-debug}
MARK="# written by ablation-lab tests/cluster/start.sh"
DB_PASS=ablation-lab-slurmdbd
HOST=$(hostname -s)

die() { echo "start.sh: $*" >&2; exit 1; }
trap 'echo "start.sh: line $LINENO failed: $BASH_COMMAND (logs: $BASE/log)" >&2' ERR
[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"
mkdir -p "$BASE"/{log,pids,state,spool}
exec 3>>"$BASE/log/start.log"

install_packages() {
    local missing=()
    for tool in slurmctld slurmd sbatch munged slurmdbd mariadbd; do
        command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} = 0 ] && return
    echo "installing SLURM, munge, slurmdbd and MariaDB (missing: ${missing[*]})"
    apt-get update -qq >&3
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge slurmdbd mariadb-server >&3
}

# A config file of ours, or none: never overwrite a site's real SLURM configuration.
write_config() {
    local path=$1
    if [ -e "$path" ] && ! grep -qF "$MARK" "$path"; then
        die "$path exists and was not written by this script; refusing to overwrite it"
    fi
    { echo "$MARK"; cat; } >"$path"
}

# Start a daemon unless its PID file names a live process; PID files of daemons we started
# are what stop.sh reads, so a daemon that was already running (not ours) is left alone.
started() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# True (and says so) when a daemon of that name runs without a PID file of ours: it is used
# as it is, never restarted, and stop.sh leaves it alone.
foreign() {
    if ! started "$2" && pgrep -x "$1" >/dev/null; then
        echo "$1 already running (not started by this script): using it"
        return 0
    fi
    return 1
}

wait_for() {
    local what=$1; shift
    for _ in $(seq 1 60); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up in 30 s (logs: $BASE/log)"
}

start_munge() {
    [ -s /etc/munge/munge.key ] || {
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    mkdir -p /run/munge && chown munge:munge /run/munge
    foreign munged "$BASE/munge/munged.pid" && return
    started "$BASE/munge/munged.pid" || {
        # munged runs as user munge: its PID and log files live in a folder of its own.
        mkdir -p "$BASE/munge" && chown munge:munge "$BASE/munge"
        runuser -u munge -- /usr/sbin/munged --pid-file="$BASE/munge/munged.pid" \
            --log-file="$BASE/munge/munged.log" --force
        wait_for munged munge -n
    }
}

start_mariadb() {
    if ! started "$BASE/pids/mariadbd.pid" && ! foreign mariadbd "$BASE/pids/mariadbd.pid"; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >&3 2>&1
        # mariadbd (as user mysql) writes its PID file in its own folder; ours is a copy.
        (/usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/ablation-lab.pid \
            --log-error="$BASE/log/mariadbd.log" >&3 2>&1 &)
        wait_for mariadbd test -s /run/mysqld/ablation-lab.pid
        wait_for mariadbd mariadb -e "select 1"
        cp /run/mysqld/ablation-lab.pid "$BASE/pids/mariadbd.pid"
    fi
    # The database user slurmdbd logs in as.
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

configure_slurm() {
    mkdir -p /etc/slurm
    write_config /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$BASE/pids/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
CONF
    chmod 600 /etc/slurm/slurmdbd.conf
    # The node line as slurmd measures this machine (sockets, cores, memory): a bare CPUs=
    # makes slurmd complain. Memory a little under the measured total.
    local node
    node=$(slurmd -C | head -1 | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/; s/ UpTime=.*//")
    write_config /etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/pids/slurmctld.pid
SlurmdPidFile=$BASE/pids/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
$node
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
}

start_slurm() {
    grep -qE "^[0-9.:]+\s.*\b$HOST\b" /etc/hosts || getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
    foreign slurmdbd "$BASE/pids/slurmdbd.pid" || started "$BASE/pids/slurmdbd.pid" || {
        /usr/sbin/slurmdbd
        wait_for slurmdbd sacctmgr -n show cluster
    }
    # Cluster, account and user must exist before slurmctld starts (it enforces associations).
    sacctmgr -nP show cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >&3
    sacctmgr -nP show account format=account | grep -qw "$ACCOUNT" || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" >&3
    sacctmgr -nP show assoc where user=root account="$ACCOUNT" format=user | grep -qw root ||
        sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >&3
    foreign slurmctld "$BASE/pids/slurmctld.pid" || started "$BASE/pids/slurmctld.pid" || {
        /usr/sbin/slurmctld -i
        wait_for slurmctld scontrol ping
    }
    foreign slurmd "$BASE/pids/slurmd.pid" || started "$BASE/pids/slurmd.pid" || /usr/sbin/slurmd
    wait_for "node $HOST" bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
}

install_packages
start_munge
start_mariadb
configure_slurm
start_slurm
echo "SLURM is up: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT (state in $BASE)"
