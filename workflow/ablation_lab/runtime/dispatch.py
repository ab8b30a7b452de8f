"""`run_job`: the one call every rule's adapter makes, to run a job in a warm worker or here.

The words of the hop, each one thing (docs/glossary.md, "How a job runs"):
- a *job* is a function of `runtime/jobs.py`, named after its rule (`train`, `aggregate`...);
- an *adapter* is a rule's script in workflow/scripts/: it unpacks what Snakemake gives it
  and calls `run_job(job, log, **kwargs)`, the one entry (the two `shell:` rules' adapter is
  the command line of `runtime/adapter.py`);
- `run_job` hands a *served* job (`servable`) to an idle warm worker as a *request* (one
  JSON line), which the worker *serves* (`worker.serve_request`); with no worker free it
  runs the job *in process*, `run_in_process`, which is also what a worker does with it.

A training job spends about 5 of its 6.5 seconds starting Python and importing TensorFlow.
When Snakemake runs locally, the workflow starts one warm worker per core
(`ablation_lab.runtime.worker`); each rule's script stays a separate Snakemake job (so caching,
logs and benchmarks are per variant, as before) but hands the work to an idle worker over a
Unix socket. With no worker reachable (cluster execution, a worker that died, the pool
turned off with ABLATION_LAB_WORKERS=0) the job runs here, with the same result.

This module imports only the standard library, and only its quick modules (no pathlib,
typing or logging at import): it is what every job script loads first, and a served job's
client process starts while its worker waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

POOL_ENV = "ABLATION_LAB_POOL"  # set by the Snakemake process that started the pool
# The jobs a warm worker serves: those whose imports it already holds. Training and the
# per-model analyses need TensorFlow; the study's aggregation, figures and report need
# pandas, SciPy and matplotlib, which a worker has imported too (Keras imports them): in
# their own processes those imports were about 60% of the study's tail, 3.5 s of a 21 s
# study on two cores (benchmarks/README.md). Data preparation runs in its own process: it
# runs while the workers are still importing TensorFlow.
SERVED_JOBS = frozenset({"train", "analyse_run", "aggregate", "plot_figures", "plot_analyses", "plot_examples", "report", "tensorboard"})
# A job that needs TensorFlow waits for a worker still importing it (it would import it
# too, from scratch); any other job goes only to a worker that has finished, so a rerun
# that redoes only the report does not wait for TensorFlow.
TENSORFLOW_JOBS = frozenset({"train", "analyse_run"})
READY_SUFFIX = ".ready"  # beside a worker's socket once its imports are done (`ready_marker`)


def current_pool() -> Path | None:
    """The pool of the Snakemake run this job belongs to (jobs inherit its environment)."""
    from pathlib import Path

    value = os.environ.get(POOL_ENV)
    return Path(value) if value else None


class WorkerUnavailable(RuntimeError):
    """No reply from a worker: the job runs in-process instead."""


def ready_marker(sock: Path) -> Path:
    """The file a worker creates beside its socket once its imports are done."""
    from pathlib import Path

    return Path(_beside(os.fspath(sock), READY_SUFFIX))


def _beside(sock: str, suffix: str) -> str:
    """`sock`'s sibling file with another suffix (`Path.with_suffix` without importing pathlib)."""
    return os.path.splitext(sock)[0] + suffix


@contextlib.contextmanager
def claim_worker(pool: str | os.PathLike[str], warm_only: bool = False) -> Iterator[str | None]:
    """Yield the socket path of an idle worker (locked for this job), or None if there is
    none; with `warm_only`, only a worker that has finished its imports will do."""
    pool = os.fspath(pool)
    try:
        names = os.listdir(pool)
    except FileNotFoundError:  # the pool of a run that has ended
        names = []
    socks = sorted(os.path.join(pool, name) for name in names if name.startswith("worker-") and name.endswith(".sock"))
    for sock in socks:
        if warm_only and not os.path.exists(_beside(sock, READY_SUFFIX)):
            continue
        handle = open(_beside(sock, ".lock"), "a")  # noqa: SIM115 (held until the job ends)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield sock
            return
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
    yield None


def ask_worker(sock: str | os.PathLike[str], request: dict[str, Any]) -> Any:
    """Send one request; block until the worker replies with the job's result or error."""
    sock = os.fspath(sock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(sock)
        except OSError as error:  # stale socket of a worker that is gone
            raise WorkerUnavailable(f"{sock}: {error}") from error
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = conn.makefile("rb").readline()
    if not reply:
        raise WorkerUnavailable(f"{sock}: the worker closed the connection without a reply")
    answer = json.loads(reply)
    if not answer["ok"]:
        raise RuntimeError(f"job {request['job']!r} failed in worker {os.path.basename(sock)} (see the job's log):\n{answer['error']}")
    return answer["result"]


def _exit_on_sigterm() -> None:
    """Snakemake stops jobs with SIGTERM: unwind, so `finally` blocks remove temporary files."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def run_in_process(job: str, log: str | None, kwargs: dict[str, Any]) -> Any:
    """Run `ablation_lab.runtime.jobs.<job>` in this process; its log ends with the job's own CPU time.

    In a worker, Snakemake's benchmark file measures only the thin client that waited; the
    CPU and wall seconds logged here are the work itself (benchmarks read them).
    """
    import time

    from ablation_lab.artifacts import job_log
    from ablation_lab.runtime import jobs
    from ablation_lab.runtime.watchdog import watch

    _exit_on_sigterm()
    watch("job")  # stop when Snakemake is gone (in a worker, the worker's own watchdog does)
    with job_log(log) as logger:
        cpu, wall = time.process_time(), time.perf_counter()
        result = getattr(jobs, job)(**kwargs)
        logger.info("job %s: %.3f CPU s, %.3f wall s (%s)", job, time.process_time() - cpu, time.perf_counter() - wall, where())
        return result


def servable(job: str, kwargs: dict[str, Any]) -> bool:
    """Whether a warm worker may run this job: workers run one thread each, on CPU (no GPU
    visible), so a job asking for more threads or for a GPU runs in its own process."""
    return (
        job in SERVED_JOBS
        and os.environ.get("ABLATION_LAB_WORKERS", "1") != "0"
        and kwargs.get("threads", 1) == 1
        and not kwargs.get("gpu")
    )


def where() -> str:
    """This process, and the SLURM job it runs in if any: a job's log says where its work ran."""
    slurm_job = os.environ.get("SLURM_JOB_ID")
    return f"process {os.getpid()}" + (f", SLURM job {slurm_job}" if slurm_job else "")


def run_job(job: str, log: str | None, **kwargs: Any) -> Any:
    """`ablation_lab.runtime.jobs.<job>(**kwargs)`, logged to `log`: served by an idle warm worker
    when the job is servable and one is free, else run in this process, with the same result."""
    from ablation_lab.runtime.watchdog import watch

    watch("job")  # stop when Snakemake is gone, also while waiting for a worker's reply
    request = {"job": job, "log": os.path.abspath(log) if log else None, "cwd": os.getcwd(), "kwargs": kwargs}
    pool = os.environ.get(POOL_ENV)
    if pool and servable(job, kwargs):
        with claim_worker(pool, warm_only=job not in TENSORFLOW_JOBS) as sock:
            if sock is not None:
                try:
                    return ask_worker(sock, request)
                except WorkerUnavailable:
                    pass  # fall through: same job, this process
    return run_in_process(job, log, kwargs)
