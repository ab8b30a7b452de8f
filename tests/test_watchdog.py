"""Jobs and workers stop within seconds when their Snakemake is gone (ablation_lab/runtime/watchdog.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from ablation_lab.runtime import watchdog

JOB = "from ablation_lab.runtime.watchdog import watch; import time; watch('job'); time.sleep(60)"


def start_job(recorded: str) -> subprocess.Popen:
    env = {**os.environ, watchdog.SNAKEMAKE_ENV: recorded, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", JOB], env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.runtime
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


def test_release_cancels_only_the_timers_of_snakemakes_scheduler():
    def wake() -> None:  # stands for the scheduler's callback
        raise AssertionError("a cancelled timer fired")

    def other() -> None:
        pass

    wake.__module__ = watchdog.SNAKEMAKE_SCHEDULER
    scheduler_timer, other_timer = threading.Timer(30, wake), threading.Timer(30, other)
    scheduler_timer.start()
    other_timer.start()
    try:
        assert watchdog.release_scheduler_timers() == 1
        scheduler_timer.join(timeout=5)
        assert not scheduler_timer.is_alive() and other_timer.is_alive()
    finally:
        other_timer.cancel()


@pytest.mark.runtime
def test_a_real_snakemake_run_leaves_a_scheduler_timer_for_onsuccess_to_release(tmp_path):
    # If a Snakemake release stops leaving the timer (or moves it), this says the workaround is stale.
    (tmp_path / "Snakefile").write_text(
        "from ablation_lab.runtime.watchdog import release_scheduler_timers\n"
        "rule done:\n    output: 'done.txt'\n    shell: 'touch {output}'\n"
        "onsuccess:\n    print('released', release_scheduler_timers())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"^released [1-9]", run.stdout, flags=re.MULTILINE), run.stdout + run.stderr
