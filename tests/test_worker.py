"""Warm workers: a job gives the same artifacts in a worker as in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ablation_lab.data.split import prepare, save_split
from ablation_lab.runtime.dispatch import run_in_process, run_job
from ablation_lab.runtime.worker import start_pool, stop_pool

pytestmark = pytest.mark.runtime  # warm workers, forks and kills: make test, not make unit

SPEC = {
    "model": {"hidden_units": [16], "activation": "relu", "dropout": 0.2},
    "training": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 2, "batch_size": 64, "early_stopping_patience": 0, "loop": "fast"},
    "transforms": [{"op": "noise", "kind": "gaussian", "level": 0.1, "apply_to": "both"}],
    "code_version": 3,
}
DIGITS = {
    "name": "digits",
    "path": None,
    "label_column": "label",
    "test_fraction": 0.2,
    "validation_fraction": 0.2,
    "split_seed": 1,
    "max_samples": None,
}


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """A one-worker pool in a temporary working directory, waited for until it listens."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATION_LAB_WORKERS", raising=False)
    save_split(prepare(DIGITS), "split.npz", "meta.json")
    pool = start_pool(1)
    deadline = time.monotonic() + 60
    while not (pool / "worker-0.sock").exists():
        assert time.monotonic() < deadline, (pool / "worker-0.log").read_text()
        time.sleep(0.1)
    yield pool
    stop_pool()
    assert "ABLATION_LAB_POOL" not in os.environ


def train_outputs(prefix: str) -> dict[str, str]:
    return {
        k: f"{prefix}/run/seed5/{k}.{ext}"
        for k, ext in [("model", "keras"), ("history", "csv"), ("predictions", "npz"), ("provenance", "json")]
    }


def test_training_in_a_worker_equals_training_in_process(pool):
    kwargs = {"spec": SPEC, "seed": 5, "threads": 1, "data": "split.npz", "meta": "meta.json"}
    assert run_job("train", "logs/worker.log", out=train_outputs("worker"), **kwargs) == "ok"
    # a second job in the same warm worker must not see state left by the first
    assert run_job("train", "logs/worker2.log", out=train_outputs("worker2"), **kwargs) == "ok"
    os.environ["ABLATION_LAB_WORKERS"] = "0"
    try:
        assert run_job("train", "logs/here.log", out=train_outputs("here"), **kwargs) == "ok"
    finally:
        del os.environ["ABLATION_LAB_WORKERS"]
    for other in ("worker2", "here"):
        with np.load("worker/run/seed5/predictions.npz") as a, np.load(f"{other}/run/seed5/predictions.npz") as b:
            for key in ("probabilities_val", "probabilities_test"):
                np.testing.assert_array_equal(a[key], b[key])
        assert Path("worker/run/seed5/history.csv").read_text() == Path(f"{other}/run/seed5/history.csv").read_text()
    assert "trained run seed 5: ok" in Path("logs/worker.log").read_text()
    assert json.loads(Path("worker/run/seed5/provenance.json").read_text())["spec"] == SPEC


def test_a_forked_worker_trains_as_a_fresh_process(tmp_path, monkeypatch):
    """The pool imports TensorFlow once and forks its other workers: a forked worker's
    training equals, to the bit, training in a process of its own."""
    from ablation_lab.runtime.dispatch import ask_worker

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATION_LAB_WORKERS", raising=False)
    save_split(prepare(DIGITS), "split.npz", "meta.json")
    pool = start_pool(2)
    try:
        deadline = time.monotonic() + 120
        while not (pool / "worker-1.ready").exists():
            assert time.monotonic() < deadline, (pool / "worker-0.log").read_text()
            time.sleep(0.1)
        first, forked = (int((pool / f"worker-{index}.pid").read_text()) for index in range(2))
        assert first != forked and forked != os.getpid()
        kwargs = {"spec": SPEC, "seed": 5, "threads": 1, "data": "split.npz", "meta": "meta.json"}
        request = {"job": "train", "log": os.path.abspath("logs/forked.log"), "cwd": os.getcwd()}
        assert ask_worker(pool / "worker-1.sock", {**request, "kwargs": {**kwargs, "out": train_outputs("forked")}}) == "ok"
        assert f"(process {forked})" in Path("logs/forked.log").read_text()
    finally:
        stop_pool()
    assert gone_within(forked, 5) and gone_within(first, 5)
    assert run_in_process("train", "logs/here.log", {**kwargs, "out": train_outputs("here")}) == "ok"
    with np.load("forked/run/seed5/predictions.npz") as a, np.load("here/run/seed5/predictions.npz") as b:
        for key in ("probabilities_val", "probabilities_test"):
            np.testing.assert_array_equal(a[key], b[key])
    assert Path("forked/run/seed5/history.csv").read_text() == Path("here/run/seed5/history.csv").read_text()


def test_a_figure_job_in_a_worker_draws_the_same_bytes_as_in_its_own_process(pool, test_config):
    """The study's tail (aggregation, figures, report) is served too: a worker that has trained
    a model and drawn before draws the same PNG as a fresh process."""
    import subprocess
    import sys

    from ablation_lab.config import validate_config
    from ablation_lab.study import Study

    config = {**test_config, "dataset": {"name": "digits"}, "families": {"noise": {"levels": [0.0, 0.3]}}, "combinations": []}
    variants = Study.from_config(validate_config(config)).variant_table()
    kwargs = {"families": ["noise"], "variants": variants, "data": "split.npz", "meta": "meta.json", "seed": 1}
    train = {"spec": SPEC, "seed": 5, "threads": 1, "data": "split.npz", "meta": "meta.json"}
    assert run_job("train", "logs/first.log", out=train_outputs("first"), **train) == "ok"  # a worker that has trained
    for name in ("worker", "worker-again"):
        run_job("plot_examples", f"logs/{name}.log", out={"noise": f"{name}.png"}, **kwargs)
        log = Path(f"logs/{name}.log").read_text()
        assert "job plot_examples" in log and f"(process {os.getpid()})" not in log  # the worker drew it
    here = {**os.environ, "ABLATION_LAB_WORKERS": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import json, sys; from ablation_lab.runtime.dispatch import run_job; run_job('plot_examples', 'logs/here.log', **json.loads(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, json.dumps({**kwargs, "out": {"noise": "here.png"}})], env=here, check=True)
    assert Path("worker.png").read_bytes() == Path("here.png").read_bytes() == Path("worker-again.png").read_bytes()


def test_a_job_without_tensorflow_goes_only_to_a_worker_that_has_finished_its_imports(tmp_path):
    """A rerun that redoes only the report must not wait for a worker still importing TensorFlow."""
    from ablation_lab.runtime.dispatch import claim_worker, ready_marker

    sock = tmp_path / "worker-0.sock"
    sock.touch()
    with claim_worker(tmp_path, warm_only=True) as claimed:
        assert claimed is None  # still importing: the job runs in its own process
    with claim_worker(tmp_path) as claimed:
        assert claimed == str(sock)  # a training waits for it
    ready_marker(sock).touch()
    with claim_worker(tmp_path, warm_only=True) as claimed:
        assert claimed == str(sock)
    with claim_worker(tmp_path / "gone") as claimed:
        assert claimed is None  # the pool of a run that has ended: the job runs in its own process


def test_a_failing_job_fails_with_its_traceback_in_the_log(pool):
    with pytest.raises(RuntimeError, match=r"failed in worker worker-0\.sock"):
        run_job("train", "logs/bad.log", spec=SPEC, seed=1, threads=1, data="missing.npz", meta="meta.json", out=train_outputs("bad"))
    log = Path("logs/bad.log").read_text()
    assert "missing.npz" in log and "Traceback" in log


def test_workers_serve_only_the_workflows_jobs_and_survive_bad_requests(pool):
    """Any process of the user can reach the socket: it must not call other functions or write elsewhere."""
    from ablation_lab.runtime.dispatch import ask_worker

    sock = pool / "worker-0.sock"
    refused = [
        ({"job": "write_json", "log": None, "cwd": os.getcwd(), "kwargs": {"target": "x.json", "payload": 1}}, "not served by workers"),
        ({"job": "train", "log": "/tmp/elsewhere.log", "cwd": os.getcwd(), "kwargs": {}}, "is not under"),
        ({"job": "train"}, "a request is a JSON object"),
    ]
    for request, message in refused:
        with pytest.raises(RuntimeError, match=message):
            ask_worker(sock, request)
    import socket as sockets

    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as conn:  # a malformed line
        conn.connect(str(sock))
        conn.sendall(b"{not json\n")
        assert b"request refused" in conn.makefile("rb").readline()
    assert not Path("x.json").exists() and not Path("/tmp/elsewhere.log").exists()
    kwargs = {"spec": SPEC, "seed": 5, "threads": 1, "data": "split.npz", "meta": "meta.json"}
    assert run_job("train", "logs/after.log", out=train_outputs("after"), **kwargs) == "ok"  # still serving


def test_without_a_worker_the_job_runs_in_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATION_LAB_POOL", raising=False)
    meta = run_job("prepare_data", "logs/prep.log", dataset_cfg=DIGITS, data_out="s.npz", meta_out="m.json")
    assert meta["sizes"]["test"] == 360 and os.path.exists("s.npz")
    assert (
        run_in_process("prepare_data", None, {"dataset_cfg": DIGITS, "data_out": "t.npz", "meta_out": "t.json"})["fingerprint"]
        == meta["fingerprint"]
    )


def test_a_second_run_leaves_the_first_runs_workers_alone(pool):
    """Two Snakemake runs in one folder (different targets) each keep their own pool."""
    import subprocess
    import sys

    worker = int((pool / "worker-0.pid").read_text())
    code = "from ablation_lab.runtime.worker import start_pool, stop_pool; stop_pool(start_pool(1))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
    os.kill(worker, 0)  # raises if the first pool's worker was stopped
    assert (pool / "worker-0.sock").exists()


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` exits within `seconds` (a zombie, exited but not yet reaped by
    the process that started it, counts as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_workers_stop_when_their_snakemake_stops_on_an_exception_or_is_killed(tmp_path):
    """Snakemake runs no onerror when it stops on an exception raised after onstart, and none
    at all when SIGKILLed: workers stop then too (atexit; their watchdog), within seconds."""
    import signal
    import subprocess
    import sys

    def owner(then: str) -> tuple[subprocess.Popen, list[int]]:
        """A process that starts a two-worker pool, waits until the second one is forked, then `then`."""
        code = "\n".join(
            [
                "import time",
                "from ablation_lab.runtime.worker import start_pool",
                "pool = start_pool(2)",
                "print(pool, flush=True)",
                "while not (pool / 'worker-1.pid').exists():",
                "    time.sleep(0.1)",
                "print('forked', flush=True)",
                then,
            ]
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        pool = Path(process.stdout.readline().strip())
        assert process.stdout.readline().strip() == "forked", (pool / "worker-0.log").read_text()
        return process, [int((pool / f"worker-{index}.pid").read_text()) for index in range(2)]

    failing, workers = owner("time.sleep(1); raise RuntimeError('DAG error after onstart')")
    assert failing.wait(timeout=30) == 1
    assert all(gone_within(worker, 3) for worker in workers), "a worker outlived its Snakemake's exception"

    killed, workers = owner("time.sleep(60)")
    time.sleep(1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    for worker in workers:
        assert gone_within(worker, 10), "a worker outlived its SIGKILLed Snakemake"


def run_job_adapter(monkeypatch):
    """workflow/scripts/run_job.py as a module (its command line is parsed by `parse`)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "run_job.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its `import _package`, as when Snakemake runs it
    spec = importlib.util.spec_from_file_location("run_job_adapter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["train", "logs/t.log", '{"seed": 1}', "--threads", "2", "--gpu", "0"],
            ("train", "logs/t.log", {"seed": 1, "threads": 2, "gpu": 0}),
        ),
        (["train", "logs/t.log", "{}", "--gpu", "1", "--threads", "3"], ("train", "logs/t.log", {"threads": 3, "gpu": 1})),
        (["analyse_run", "logs/a.log", "{}"], ("analyse_run", "logs/a.log", {"threads": 1})),
        (["train", "logs/t.log", "{}", "--threads=4"], ("train", "logs/t.log", {"threads": 4})),  # argparse's spelling
    ],
)
def test_the_job_adapter_reads_its_command_line_as_argparse_would(argv, expected, monkeypatch):
    assert run_job_adapter(monkeypatch).parse(argv) == expected


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "logs/t.log"], ["train", "logs/t.log", "{}", "--threads", "two"], ["train", "l", "{}", "--cores", "2"]]
)
def test_the_job_adapter_leaves_anything_unusual_to_argparse(argv, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        run_job_adapter(monkeypatch).parse(argv)
    printed = capsys.readouterr()
    assert "usage:" in printed.out + printed.err


def test_the_pool_imports_what_the_jobs_use_before_it_forks():
    """A refactor that drops a warm import makes every served job pay it again (sklearn alone is about 1 s)."""
    code = (
        "import sys; from ablation_lab.runtime.worker import _import_for_jobs; _import_for_jobs(); "
        "print(' '.join(m for m in ('sklearn.metrics', 'ablation_lab.analyses.registry', 'ablation_lab.analyses.evaluation', "
        "'ablation_lab.models.build', 'ablation_lab.runtime.jobs', 'ablation_lab.training.train', 'tensorflow') if m not in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"not imported before the fork: {result.stdout.strip()}"


def test_a_worker_killed_mid_job_leaves_the_job_to_finish_in_its_own_process(pool):
    """SIGKILL the worker while it trains: the job's client gets no reply, runs the job itself,
    and its artifacts equal a clean run's (the killed writer's temporaries are not trusted)."""
    import signal
    import threading

    kwargs = {
        "spec": {**SPEC, "training": {**SPEC["training"], "epochs": 30}},
        "seed": 5,
        "threads": 1,
        "data": "split.npz",
        "meta": "meta.json",
    }
    result: dict[str, object] = {}
    job = threading.Thread(target=lambda: result.update(value=run_job("train", "logs/killed.log", out=train_outputs("killed"), **kwargs)))
    job.start()
    deadline = time.monotonic() + 60
    while "epoch" not in (Path("logs/killed.log").read_text() if Path("logs/killed.log").exists() else ""):
        assert time.monotonic() < deadline and job.is_alive(), "the worker never started the job"
        time.sleep(0.05)
    os.kill(int((pool / "worker-0.pid").read_text()), signal.SIGKILL)
    job.join(timeout=300)
    assert result.get("value") == "ok"
    os.environ["ABLATION_LAB_WORKERS"] = "0"
    try:
        assert run_job("train", "logs/clean.log", out=train_outputs("clean"), **kwargs) == "ok"
    finally:
        del os.environ["ABLATION_LAB_WORKERS"]
    with np.load("killed/run/seed5/predictions.npz") as a, np.load("clean/run/seed5/predictions.npz") as b:
        np.testing.assert_array_equal(a["probabilities_test"], b["probabilities_test"])
    assert not list(Path("killed").rglob(".*")), "a temporary of the killed writer is left"


def test_a_module_without_scripts_on_disk_runs_the_installed_adapter(tmp_path):
    """A module read from git has no workflow/scripts/run_job.py on disk: the served jobs' command
    is then `python -m ablation_lab.runtime.adapter`, the same adapter, the same every run."""
    from types import SimpleNamespace

    from ablation_lab.runtime.hooks import job_command

    local = SimpleNamespace(deployment_settings=None)
    script = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "run_job.py"
    assert job_command(local, str(script)).endswith("run_job.py")
    command = job_command(local, str(tmp_path / "absent" / "run_job.py"))
    assert command == f"{sys.executable} -m ablation_lab.runtime.adapter"
    done = subprocess.run([sys.executable, "-m", "ablation_lab.runtime.adapter", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "REQUEST" in done.stdout.upper()
