"""Benchmark: the warm-worker hop, hand-made against the standard library's `multiprocessing`.

Issue 24 asks whether the hand-made parts of the runtime (a JSON line over a Unix socket,
`runtime/dispatch.py` and `runtime/worker.py`) should give way to `multiprocessing.connection`
(authenticated, framed) and a forkserver. Every served job pays the hop while its worker
waits, twice: (a) the client process's start-up, which imports the dispatch module, and (b)
one request and its reply. This script measures both paths side by side, alternated, in one
run:

- start-up: a fresh `python` importing `ablation_lab.runtime.adapter` (what
  `workflow/scripts/run_job.py` loads), against the same plus `multiprocessing.connection`;
- round trip: one connection, one request of a training job's size and its reply, to an
  echo server in a thread: JSON line over `socket.AF_UNIX` against `Listener`/`Client` with
  an `authkey` (the HMAC handshake is part of every connection).

    .venv/bin/python benchmarks/bench_client.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, REPO, header, median, ratio, summary_row, table, write_summary

REQUEST = {"job": "train", "log": "logs/x.log", "cwd": "/tmp", "kwargs": {"spec": {"k": "v" * 2000}, "threads": 1}}
START_UP = {
    "hand-made (socket + json)": "import ablation_lab.runtime.adapter",
    "multiprocessing.connection": "import ablation_lab.runtime.adapter, multiprocessing.connection",
}


def start_up_seconds(code: str) -> float:
    """Wall seconds of a fresh interpreter that imports what a served job's client imports."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", code], env=env, check=True)
    return time.perf_counter() - started


def socket_round_trip(folder: str, rounds: int) -> list[float]:
    """Seconds per connect + request + reply, as `dispatch.ask_worker` and `worker.serve` do it."""
    path = os.path.join(folder, "echo.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    Path(path).unlink(missing_ok=True)  # the previous repeat's
    server.bind(path)
    server.listen(8)

    def serve() -> None:
        for _ in range(rounds):
            conn, _ = server.accept()
            with conn:
                request = json.loads(conn.makefile("rb").readline())
                conn.sendall(json.dumps({"ok": True, "result": request["job"]}).encode() + b"\n")

    def ask() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.sendall(json.dumps(REQUEST).encode() + b"\n")
            json.loads(conn.makefile("rb").readline())

    return _timed(serve, ask, rounds, server.close)


def connection_round_trip(folder: str, rounds: int) -> list[float]:
    """Seconds per connect + request + reply with `multiprocessing.connection` and an authkey."""
    from multiprocessing.connection import Client, Listener

    path, key = os.path.join(folder, "mp.sock"), os.urandom(32)
    Path(path).unlink(missing_ok=True)  # the previous repeat's
    listener = Listener(path, family="AF_UNIX", authkey=key)

    def serve() -> None:
        for _ in range(rounds):
            with listener.accept() as conn:
                request = json.loads(conn.recv_bytes())
                conn.send_bytes(json.dumps({"ok": True, "result": request["job"]}).encode())

    def ask() -> None:
        with Client(path, family="AF_UNIX", authkey=key) as conn:
            conn.send_bytes(json.dumps(REQUEST).encode())
            json.loads(conn.recv_bytes())

    return _timed(serve, ask, rounds, listener.close)


def _timed(serve: Callable[[], None], ask: Callable[[], None], rounds: int, close: Callable[[], None]) -> list[float]:
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        ask()
        seconds.append(time.perf_counter() - started)
    thread.join()
    close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    args = parser.parse_args()
    header("bench_client: the warm-worker hop, hand-made vs multiprocessing", args.quick)
    repeats, rounds = (5, 50) if args.quick else (21, 400)
    starts: dict[str, list[float]] = {name: [] for name in START_UP}
    for _ in range(repeats):  # alternated, so drift in the machine's load hits both
        for name, code in START_UP.items():
            starts[name].append(start_up_seconds(code))
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        trips = {"hand-made (socket + json)": [], "multiprocessing.connection": []}
        for _ in range(3):
            trips["hand-made (socket + json)"] += socket_round_trip(folder, rounds)
            trips["multiprocessing.connection"] += connection_round_trip(folder, rounds)
    base, other = (median(starts[name]) for name in START_UP)
    trip_base, trip_other = (median(trips[name]) for name in trips)
    rows = [
        (f"client start-up (median of {repeats})", f"{base * 1e3:.1f} ms", f"{other * 1e3:.1f} ms", f"{ratio(other, base):.2f}"),
        (
            f"round trip (median of {3 * rounds})",
            f"{trip_base * 1e3:.3f} ms",
            f"{trip_other * 1e3:.3f} ms",
            f"{ratio(trip_other, trip_base):.2f}",
        ),
        (
            "per served job",
            f"{(base + trip_base) * 1e3:.1f} ms",
            f"{(other + trip_other) * 1e3:.1f} ms",
            f"{ratio(other + trip_other, base + trip_base):.2f}",
        ),
    ]
    print(table(rows, ["path", "hand-made", "multiprocessing", "ratio (multiprocessing / hand-made)"]))
    write_summary(args.summary_json, [summary_row("bench_client", "served job's hop, multiprocessing / hand-made", rows[-1][-1])])


if __name__ == "__main__":
    main()
