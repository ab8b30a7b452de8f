"""Warm workers: processes that have imported TensorFlow once and run many jobs.

`start_pool` is called by the Snakefile's `onstart` for local runs; `stop_pool` by
`onsuccess`/`onerror`. A worker serves one request at a time over a Unix socket
(`serve_request`): it runs the request's job exactly as the job's own process would
(`dispatch.run_in_process`: same function, same log file; seeds reset and the Keras session
cleared per job), and exits when asked, when idle for a while, or within
about a second when the Snakemake process that started it is gone (killed, or exited without
`onerror`/`onsuccess`: its watchdog thread checks once a second, also during a job).

The pool pays TensorFlow's import once, not once per worker: `start_pool` starts the first
worker, which listens on every worker's socket, imports TensorFlow and the package, and then
forks the others. The fork comes before TensorFlow's runtime starts (no op has run, no
TensorFlow thread exists; each worker configures its own threads after the fork), the
pattern of a prefork server; the import was about 4.5 of the 33 CPU seconds a study of the
article took on two cores (benchmarks/README.md). The threads alive at the fork hold no
lock a worker needs: the first worker's watchdog (it only sleeps and reads its parent's
PID; each forked worker starts its own), and those of numpy's OpenBLAS and pyarrow's
jemalloc, which both prepare for a fork themselves. Python 3.12 and later print a
DeprecationWarning about such a fork into the worker's log.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ablation_lab.runtime.dispatch import POOL_ENV, SERVED_JOBS, current_pool, ready_marker

IDLE_SECONDS = 300


def pool_size_from_env(cores: int) -> int:
    """One worker per core, unless ABLATION_LAB_WORKERS says otherwise (0 turns them off)."""
    value = os.environ.get("ABLATION_LAB_WORKERS")
    return cores if value is None else max(0, int(value))


def start_pool(cores: int) -> Path:
    """Start this process's workers in the background (they warm up on their own).

    Each Snakemake process gets its own pool folder and exports it to its jobs
    (ABLATION_LAB_POOL): two runs in one working directory never share or stop each other's
    workers. The folder is a fresh one under /tmp because a Unix socket's path must stay
    under about 100 characters, which a project folder may not.
    """
    base = "/tmp" if os.path.isdir("/tmp") else None
    pool = Path(tempfile.mkdtemp(prefix=_owner_prefix(), dir=base))
    count = pool_size_from_env(cores)
    if count:
        with open(log_path(pool, 0), "w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ablation_lab.runtime.worker",
                    "--pool",
                    str(pool),
                    "--workers",
                    str(count),
                    "--parent",
                    str(os.getpid()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_worker_env(),
            )
        pid_path(pool, 0).write_text(str(process.pid))
    os.environ[POOL_ENV] = str(pool)
    # Snakemake calls stop_pool from onsuccess/onerror, but not when it stops on an exception
    # raised after onstart; atexit covers any exit of this process short of SIGKILL (which the
    # workers' watchdog covers).
    atexit.register(stop_pool, pool)
    return pool


def socket_path(pool: Path, index: int) -> Path:
    return pool / f"worker-{index}.sock"


def pid_path(pool: Path, index: int) -> Path:
    return pool / f"worker-{index}.pid"


def log_path(pool: Path, index: int) -> Path:
    return pool / f"worker-{index}.log"


def _worker_env() -> dict[str, str]:
    """The package workers import is the one this workflow runs (its source tree comes first)."""
    package_root = str(Path(__file__).resolve().parents[2])
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + inherited if inherited else "")}


def _owner_prefix() -> str:
    return f"ablation-lab-{os.getpid()}-"


def stop_pool(pool: Path | None = None) -> None:
    """Stop the workers of `pool` (default: this process's pool) and remove its folder.

    Only the process that started a pool stops it: a child that inherited ABLATION_LAB_POOL
    (a job, a nested run) leaves it alone.
    """
    pool = pool or current_pool()
    if pool is None or not pool.name.startswith(_owner_prefix()):
        return
    for pid_file in pool.glob("worker-*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)
    shutil.rmtree(pool, ignore_errors=True)
    if os.environ.get(POOL_ENV) == str(pool):
        del os.environ[POOL_ENV]


def _import_for_jobs() -> None:
    """Pay the imports once, before the fork: TensorFlow, Keras, and what the jobs use.

    Importing starts no TensorFlow thread and runs no op, so the forked workers share these
    pages and each starts its own runtime (`_configure`).
    """
    import sklearn.metrics  # noqa: F401 (evaluation imports it in the job, so parsing the workflow does not)

    from ablation_lab.analyses import evaluation, registry  # noqa: F401 (every analysis module)
    from ablation_lab.models import build  # noqa: F401 (Keras)
    from ablation_lab.runtime import jobs  # noqa: F401
    from ablation_lab.training import train  # noqa: F401 (TensorFlow)


def _configure(threads: int) -> None:
    """After the fork: this worker's TensorFlow threads (the runtime starts here, per process)."""
    from ablation_lab.training import train

    train.configure_tensorflow(threads)


def check_request(request: Any) -> str | None:
    """Why a request must be refused, or None: only the served jobs, logs only under `<cwd>/logs/`.

    Any process of the same user can reach the socket; it must not be able to call other
    functions of `jobs` or make the worker truncate a file outside the run's logs.
    """
    if not isinstance(request, dict) or not {"job", "log", "cwd", "kwargs"} <= set(request):
        return "a request is a JSON object with job, log, cwd and kwargs"
    if request["job"] not in SERVED_JOBS:
        return f"job {request['job']!r} is not served by workers (served: {', '.join(sorted(SERVED_JOBS))})"
    if not isinstance(request["kwargs"], dict) or not isinstance(request["cwd"], str) or not os.path.isdir(request["cwd"]):
        return "kwargs must be an object and cwd an existing folder"
    log = request["log"]
    if log is not None:
        logs = Path(request["cwd"], "logs").resolve()
        if not isinstance(log, str) or not Path(log).resolve().is_relative_to(logs):
            return f"log {log!r} is not under {str(logs)!r}"
    return None


def serve_request(request: Any) -> dict:
    """Serve one request: refuse it (`check_request`) or run its job in this worker, exactly as
    `run_in_process` runs it in a job's own process, and leave the worker clean for the next."""
    from ablation_lab.runtime.dispatch import run_in_process

    refused = check_request(request)
    if refused:
        return {"ok": False, "error": f"request refused: {refused}"}
    os.chdir(request["cwd"])
    try:
        result = run_in_process(request["job"], request["log"], request["kwargs"])
        return {"ok": True, "result": result}
    except Exception:
        return {"ok": False, "error": traceback.format_exc()}
    finally:
        import keras

        keras.backend.clear_session(free_memory=True)
        if "matplotlib.pyplot" in sys.modules:  # a figure job that failed midway leaves no figure to the next
            sys.modules["matplotlib.pyplot"].close("all")


def _read_request(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None  # refused by check_request; the worker keeps serving


def listen(sock_path: Path) -> socket.socket:
    """Bind a worker's socket: clients may connect at once and wait while it warms up."""
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(8)
    return server


def serve_pool(pool: Path, count: int, parent: int, threads: int = 1, idle: float = IDLE_SECONDS) -> None:
    """The first worker: listen for all `count` workers, import once, fork the others, serve.

    Every worker stops when the Snakemake process `parent` is gone; the first one also waits
    for the workers it forked before it stops for idleness (it reaps them).
    """
    from ablation_lab.runtime.watchdog import start_time, watch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # stop within a second when the parent (Snakemake) is gone, also while importing
    watch("warm worker", lambda: os.getppid() == parent, f"process {parent}")
    snakemake_started = start_time(parent)  # the forked workers tell it from a later process given its PID
    servers = [listen(socket_path(pool, index)) for index in range(count)]
    _import_for_jobs()
    # Each job ends with clear_session(free_memory=True), a full garbage collection. Over the
    # million objects TensorFlow's import leaves, that took 0.15 s per job (a whole analysis
    # job is 0.01 s); frozen, they are never scanned again and the collection takes 0.01 s.
    # Frozen before the fork, they also stay shared between the workers (no copy on write).
    gc.collect()
    gc.freeze()
    children = []
    for index in range(1, count):
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:
            _serve_forked(pool, index, servers, parent, snakemake_started, threads, idle)
        children.append(child)
        servers[index].close()
    serve(servers[0], socket_path(pool, 0), lambda: os.getppid() == parent, threads, idle, busy=lambda: _reap(children))


def _serve_forked(pool: Path, index: int, servers: list[socket.socket], parent: int, started: str, threads: int, idle: float) -> None:
    """A forked worker: its own log, pid file and watchdog; it never returns to its parent's code."""
    from ablation_lab.runtime.watchdog import alive, watch

    code = 0
    try:
        for other, server in enumerate(servers):
            if other != index:
                server.close()
        with open(log_path(pool, index), "w") as log:
            os.dup2(log.fileno(), sys.stdout.fileno())
            os.dup2(log.fileno(), sys.stderr.fileno())
        pid_path(pool, index).write_text(str(os.getpid()))
        # its watchdog watches Snakemake itself (the thread of the first worker is not forked)
        still_wanted = lambda: alive(parent, started)  # noqa: E731
        watch("warm worker", still_wanted, f"process {parent}")
        serve(servers[index], socket_path(pool, index), still_wanted, threads, idle)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never run the first worker's code (its loop, its atexit handlers)


def _reap(children: list[int]) -> bool:
    """Whether any forked worker still runs (reaping those that have exited)."""
    for child in list(children):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(child, os.WNOHANG)[0] == 0:
                continue
        children.remove(child)
    return bool(children)


def serve(
    server: socket.socket,
    sock_path: Path,
    still_wanted: Callable[[], bool],
    threads: int = 1,
    idle: float = IDLE_SECONDS,
    busy: Callable[[], bool] = lambda: False,
) -> None:
    """Answer requests on `server` until idle for `idle` seconds (and not `busy`) or unwanted."""
    _configure(threads)
    ready_marker(sock_path).touch()  # jobs that would not wait for the imports may come now
    server.settimeout(5.0)
    last_job = time.monotonic()
    try:
        while (time.monotonic() - last_job < idle or busy()) and still_wanted():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                line = conn.makefile("rb").readline()
                if line:
                    reply = serve_request(_read_request(line))
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
            last_job = time.monotonic()
    finally:
        server.close()
        ready_marker(sock_path).unlink(missing_ok=True)
        sock_path.unlink(missing_ok=True)
        if not still_wanted():  # Snakemake died without stopping the pool: tidy up
            sock_path.with_suffix(".pid").unlink(missing_ok=True)
            if not list(sock_path.parent.glob("worker-*.pid")):
                shutil.rmtree(sock_path.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=Path, required=True, help="the pool's folder (sockets, pids, logs)")
    parser.add_argument("--workers", type=int, default=1, help="how many workers, this one and those it forks")
    parser.add_argument("--parent", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    serve_pool(args.pool, args.workers, args.parent, args.threads)


if __name__ == "__main__":
    main()
