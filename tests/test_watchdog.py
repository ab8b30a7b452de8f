"""Jobs and workers stop within seconds when their Snakemake is gone (ablation_lab/watchdog.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from ablation_lab import watchdog

JOB = "from ablation_lab.watchdog import watch; import time; watch('job'); time.sleep(60)"


def start_job(recorded: str) -> subprocess.Popen:
    env = {**os.environ, watchdog.SNAKEMAKE_ENV: recorded, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", JOB], env=env, stderr=subprocess.PIPE, text=True)


def test_a_job_stops_within_seconds_when_its_snakemake_is_killed():
    snakemake = subprocess.Popen(["sleep", "60"])  # stands in for the Snakemake process
    job = start_job(watchdog.identity(snakemake.pid))
    time.sleep(1.5)
    assert job.poll() is None, "runs while its Snakemake lives"
    snakemake.kill()
    snakemake.wait()
    killed = time.monotonic()
    job.wait(timeout=10)
    assert time.monotonic() - killed < watchdog.POLL_SECONDS + watchdog.GRACE_SECONDS + 2
    assert f"Snakemake (process {snakemake.pid}) is gone: stopping this job (process {job.pid})" in job.stderr.read()


def test_a_reused_pid_is_not_its_snakemake():
    """A later process given the same PID has another start time: the job stops anyway."""
    me = os.getpid()
    assert watchdog.alive(me, watchdog.start_time(me))
    assert not watchdog.alive(me, "1")


def test_nothing_is_watched_without_a_record_of_this_machine(monkeypatch):
    monkeypatch.delenv(watchdog.SNAKEMAKE_ENV, raising=False)
    assert watchdog.snakemake_check() is None  # a job run by hand or by a test
    monkeypatch.setenv(watchdog.SNAKEMAKE_ENV, f"1 - {socket.gethostname()}-node")
    assert watchdog.snakemake_check() is None  # a cluster node: the record is another host's
    monkeypatch.setenv(watchdog.SNAKEMAKE_ENV, watchdog.identity(os.getpid()))
    assert watchdog.snakemake_check() is None  # this process is the Snakemake
    monkeypatch.setenv(watchdog.SNAKEMAKE_ENV, watchdog.identity(os.getppid()))
    check = watchdog.snakemake_check()
    assert check is not None and check()
