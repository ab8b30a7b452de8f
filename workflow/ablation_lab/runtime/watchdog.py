"""Jobs and warm workers stop within seconds when the Snakemake that runs them is gone.

Snakemake stops its jobs when it exits on its own, but a SIGKILL (the OOM killer, `kill -9`,
a closed terminal's session) skips that: its job processes and warm workers would run on
until their job ends and could overlap a rerun. So the Snakefile's `onstart` records the
Snakemake process (`record_snakemake`: its PID, its start time, to tell it from a later
process given the same PID, and the host) in ABLATION_LAB_SNAKEMAKE, which every job
inherits; each job process and each worker runs a daemon thread (`watch`) that checks once a
second whether that process is still alive and, when it is gone, logs one line and stops its
own process (SIGTERM to itself, so temporary files are removed, then `os._exit`).

Only local runs record it: under a cluster executor the variable is removed before any job
is submitted, and a job that finds a record of another host ignores it, so nothing here ever
stops a job on a cluster node.

Standard library only, and only its quick modules: the job scripts import it before
anything else (logging is imported when a watchdog fires, type hints only when checked).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SNAKEMAKE_ENV = "ABLATION_LAB_SNAKEMAKE"  # "<pid> <start time> <host>", set by the Snakefile's onstart
POLL_SECONDS = 1.0
GRACE_SECONDS = 3.0  # after SIGTERM to itself, how long a process may unwind before os._exit

_lock = threading.Lock()
_watching: threading.Thread | None = None


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""  # field 22 of proc(5), counted after the name


def identity(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid} {start_time(pid) or '-'} {socket.gethostname()}"


def record_snakemake() -> None:
    """Called by the Snakefile's `onstart` in a local run: this process is the jobs' Snakemake."""
    os.environ[SNAKEMAKE_ENV] = identity()


def forget_snakemake() -> None:
    """Called by `onstart` under a cluster executor: jobs on other machines watch nothing."""
    os.environ.pop(SNAKEMAKE_ENV, None)


def parse(recorded: str) -> tuple[int, str, str] | None:
    parts = recorded.split(" ", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), "" if parts[1] == "-" else parts[1], parts[2]


def alive(pid: int, started: str = "") -> bool:
    """Whether process `pid` exists and, when its start time was recorded, is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return not started or start_time(pid) == started


def snakemake_check() -> Callable[[], bool] | None:
    """A check that this job's Snakemake is alive, or None when there is nothing to watch here:
    no record (a job run by hand, a test, a cluster job), a record of another host, or this very process."""
    recorded = parse(os.environ.get(SNAKEMAKE_ENV, ""))
    if recorded is None:
        return None
    pid, started, host = recorded
    if host != socket.gethostname() or pid == os.getpid():
        return None
    return lambda: alive(pid, started)


def watch(what: str, check: Callable[[], bool] | None = None, watched: str = "") -> threading.Thread | None:
    """Stop this process (`what`: a job, a worker) when `check()` turns false; by default,
    when the Snakemake recorded in ABLATION_LAB_SNAKEMAKE is gone.

    One watchdog per process: a worker starts its own when it starts, and the jobs it serves
    start none.
    """
    global _watching
    if check is None:
        check = snakemake_check()
        watched = f"process {os.environ.get(SNAKEMAKE_ENV, '').split(' ')[0]}"
    if check is None:
        return None
    with _lock:
        if _watching is not None and _watching.is_alive():
            return None
        message = f"Snakemake ({watched}) is gone: stopping this {what} (process {os.getpid()}); rerun Snakemake to finish the study"
        _watching = threading.Thread(target=_watch, args=(check, message), name="ablation-lab-watchdog", daemon=True)
        _watching.start()
        return _watching


def _watch(check: Callable[[], bool], message: str) -> None:
    while check():
        time.sleep(POLL_SECONDS)
    import logging

    logging.getLogger("ablation_lab").error(message)
    os.kill(os.getpid(), signal.SIGTERM)  # unwinds where a handler turns it into SystemExit
    time.sleep(GRACE_SECONDS)
    os._exit(143)


SNAKEMAKE_SCHEDULER = "snakemake.scheduling.job_scheduler"


def release_scheduler_timers() -> int:
    """Cancel the timers Snakemake's scheduler left behind; the number cancelled.

    With its job-rate limit on (the default, `--max-jobs-per-timespan 100/1s`), Snakemake's
    scheduler starts a non-daemon `threading.Timer` after each scheduling round to wake
    itself a second later (snakemake 9.x, `JobScheduler._schedule_reevalutation`). The last
    one outlives the run: the process waits for it, so every local run ended about a second
    after its last job. Called from `onsuccess`, when the scheduler has finished for good, so
    nothing is left to wake. Only timers whose function comes from Snakemake's scheduler
    module are cancelled; if a later Snakemake names it differently, nothing is, and the run
    just exits a second later as before.
    """
    timers = [
        thread
        for thread in threading.enumerate()
        if isinstance(thread, threading.Timer) and getattr(thread.function, "__module__", None) == SNAKEMAKE_SCHEDULER
    ]
    for timer in timers:
        timer.cancel()
    return len(timers)
