"""Warm workers: processes that have imported TensorFlow once and run many jobs.

`start_pool` is called by the Snakefile's `onstart` for local runs; `stop_pool` by
`onsuccess`/`onerror`. A worker serves one job at a time over a Unix socket, runs it
exactly as the job's own process would (same function, same log file, seeds reset and the
Keras session cleared per job), and exits when asked, when idle for a while, or within
about a second when the Snakemake process that started it is gone (killed, or exited without
`onerror`/`onsuccess`: its watchdog thread checks once a second, also during a job).
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
from pathlib import Path
from typing import Any

from ablation_lab.dispatch import POOL_ENV, SERVED_JOBS, current_pool, ready_marker

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
    for index in range(pool_size_from_env(cores)):
        with open(pool / f"worker-{index}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ablation_lab.worker", "--socket", str(pool / f"worker-{index}.sock"), "--parent", str(os.getpid())],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_worker_env(),
            )
        (pool / f"worker-{index}.pid").write_text(str(process.pid))
    os.environ[POOL_ENV] = str(pool)
    # Snakemake calls stop_pool from onsuccess/onerror, but not when it stops on an exception
    # raised after onstart; atexit covers any exit of this process short of SIGKILL (which the
    # workers' watchdog covers).
    atexit.register(stop_pool, pool)
    return pool


def _worker_env() -> dict[str, str]:
    """The package workers import is the one this workflow runs (its source tree comes first)."""
    package_root = str(Path(__file__).resolve().parents[1])
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


def _warm_up(threads: int) -> None:
    """Pay the imports once: TensorFlow, Keras, and what training and the analyses use."""
    from ablation_lab import analyses, evaluate, jobs, models, train  # noqa: F401 (imported to be warm)

    train.configure_tensorflow(threads)
    import keras  # noqa: F401


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


def _run(request: Any) -> dict:
    from ablation_lab.dispatch import run_here

    refused = check_request(request)
    if refused:
        return {"ok": False, "error": f"request refused: {refused}"}
    os.chdir(request["cwd"])
    try:
        result = run_here(request["job"], request["log"], request["kwargs"])
        return {"ok": True, "result": result}
    except Exception:
        return {"ok": False, "error": traceback.format_exc()}
    finally:
        import keras

        keras.backend.clear_session(free_memory=True)
        if "matplotlib.pyplot" in sys.modules:  # a figure job that failed midway leaves no figure to the next
            sys.modules["matplotlib.pyplot"].close("all")


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None  # refused by check_request; the worker keeps serving


def serve(sock_path: Path, parent: int, threads: int = 1, idle: float = IDLE_SECONDS) -> None:
    from ablation_lab.watchdog import watch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # stop within a second when the parent (Snakemake) is gone, also while warming up or serving a job
    watch("warm worker", lambda: os.getppid() == parent, f"process {parent}")
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(8)  # clients may connect now; they wait while this worker warms up
    _warm_up(threads)
    # Each job ends with clear_session(free_memory=True), a full garbage collection. Over the
    # million objects TensorFlow's import leaves, that took 0.15 s per job (a whole analysis
    # job is 0.01 s); frozen, they are never scanned again and the collection takes 0.01 s.
    gc.collect()
    gc.freeze()
    ready_marker(sock_path).touch()  # jobs that would not wait for the imports may come now
    server.settimeout(5.0)
    last_job = time.monotonic()
    try:
        while time.monotonic() - last_job < idle and os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                line = conn.makefile("rb").readline()
                if line:
                    reply = _run(_parse(line))
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
            last_job = time.monotonic()
    finally:
        server.close()
        ready_marker(sock_path).unlink(missing_ok=True)
        sock_path.unlink(missing_ok=True)
        if os.getppid() != parent:  # Snakemake died without stopping the pool: tidy up
            sock_path.with_suffix(".pid").unlink(missing_ok=True)
            if not list(sock_path.parent.glob("worker-*.pid")):
                shutil.rmtree(sock_path.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    serve(args.socket, args.parent, args.threads)


if __name__ == "__main__":
    main()
