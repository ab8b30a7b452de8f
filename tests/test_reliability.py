"""Promises about failure: bad data, interrupted runs, divergence, concurrent invocations."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, snakemake, write_config

pytestmark = pytest.mark.workflow

SMALL = {
    "study": "small",
    "seeds": [1],
    "dataset": {"name": "digits"},
    "model": {"hidden_units": [32]},
    "training": {"epochs": 3, "early_stopping_patience": 0},
    "families": {"dropout": {"rates": [0.1, 0.3, 0.5]}, "activation": {"functions": ["tanh", "sigmoid", "linear"]}},
}


def start(workdir: Path, config: Path, *args: str) -> subprocess.Popen:
    """A workflow run in its own process group, so the test can kill it with its jobs."""
    command = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    with open(workdir / "snakemake-output.txt", "w") as log:  # a file, not a pipe: a full pipe would stall it
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(predicate, timeout: float = 120.0, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(poll)


def accuracy_table(workdir: Path) -> pd.DataFrame:
    tidy = pd.read_csv(workdir / "reports" / "small" / "tables" / "metrics.csv")
    return tidy[tidy["metric"] != "train_seconds"].sort_values(["family", "variant", "seed", "metric"], ignore_index=True)


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    clean.mkdir()
    broken.mkdir()
    snakemake(clean, write_config(clean, SMALL), "--cores", "2")

    config = write_config(broken, SMALL)
    run = start(broken, config, "--cores", "1")
    results = broken / "results"
    # kill once Snakemake counts a first training as done (or, the same, a first model as
    # evaluated: Snakemake may run the trainings or the evaluations first, its choice between
    # equal jobs varies); with --cores 1 most of the study is still to come
    output = broken / "snakemake-output.txt"

    def first_done() -> bool:
        return "(Rule: train)" in output.read_text() or any(results.glob("*/*/seed1/evaluation/*.csv"))

    wait_for(first_done, poll=0.05)
    os.killpg(run.pid, signal.SIGTERM)
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):  # then no mercy for whatever is left
        os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    finished_before = {p.parent: p.stat().st_mtime_ns for p in results.glob("*/*/seed1/provenance.json")}
    assert 1 <= len(finished_before) < 7, "the kill must land mid-study"

    # a SIGKILL that lands before Snakemake has removed its lock leaves it (the README's advice)
    snakemake(broken, config, "--unlock")
    resumed = snakemake(broken, config, "--cores", "2", "--rerun-incomplete")
    for run_dir, mtime in finished_before.items():
        assert (run_dir / "provenance.json").stat().st_mtime_ns == mtime, f"{run_dir} was retrained"
    assert "rule train:" in resumed.stdout
    pd.testing.assert_frame_equal(accuracy_table(broken), accuracy_table(clean))
    assert not [p for p in results.rglob(".*") if p.is_file()], "no half-written temporaries remain"


def test_second_invocation_is_refused_by_the_lock(tmp_path):
    config = write_config(tmp_path, SMALL)
    first = start(tmp_path, config, "--cores", "1")
    wait_for(lambda: (tmp_path / ".snakemake" / "locks").exists() and any((tmp_path / ".snakemake" / "locks").iterdir()))
    # The first run, its jobs and workers are paused while the second ones try: however fast
    # the study, it is still going, and holds its lock, when they start.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        # A plain second run is refused, by the lock or, while a job of the first is running,
        # by Snakemake's check for incomplete outputs; `--rerun-incomplete` gets past the
        # latter, and the lock still refuses it.
        plain = snakemake(tmp_path, config, "--cores", "1", check=False, timeout=120)
        forced = snakemake(tmp_path, config, "--cores", "1", "--rerun-incomplete", check=False, timeout=120)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert plain.returncode != 0
    assert "cannot be locked" in plain.stdout or "Incomplete files" in plain.stdout
    assert forced.returncode != 0
    assert "cannot be locked" in forced.stdout
    first.wait(timeout=600)
    assert first.returncode == 0, (tmp_path / "snakemake-output.txt").read_text()[-3000:]
    assert (tmp_path / "reports" / "small" / "report.html").exists()


def test_diverged_variant_is_reported_and_the_study_completes(tmp_path):
    config = {
        **SMALL,
        "training": {"epochs": 2, "optimizer": "sgd", "learning_rate": 1e12, "early_stopping_patience": 0},
        "families": {"dropout": {"rates": [0.5]}},
    }
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    runs = pd.read_csv(tmp_path / "reports" / "small" / "tables" / "runs.csv")
    assert set(runs["status"]) == {"diverged"}
    assert set(runs["diverged_epoch"]) == {1}
    page = (tmp_path / "reports" / "small" / "report.html").read_text()
    assert "Diverged runs (loss became NaN): baseline/reference seed 1, dropout/rate-0.5 seed 1" in page


def test_bad_data_fails_before_any_job_with_one_clear_line_and_nothing_downstream(tmp_path):
    """The CSV header is read while the workflow is parsed (to name variants): a missing label
    column stops everything there, before data prep, with one line naming file and column."""
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0]}).to_csv(tmp_path / "table.csv", index=False)
    config = {
        **SMALL,
        "dataset": {"name": "csv", "path": str(tmp_path / "table.csv"), "label_column": "target"},
        "families": {"dropout": {"rates": [0.5]}},
    }
    done = snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2", check=False)
    assert done.returncode != 0
    assert "has no label column 'target' (dataset.label_column); its columns are a, b" in done.stdout
    assert not (tmp_path / "results").exists()


def test_config_cannot_name_code_to_import(tmp_path):
    """No config key takes an import path, a lambda or a file of code: they are rejected."""
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["model"]["activation"] = "lambda x: __import__('os').system('true')"
    done = snakemake(tmp_path, write_config(tmp_path, config), "--dry-run", check=False)
    assert done.returncode != 0 and "model.activation" in done.stdout and "allowed values" in done.stdout
    # the message alone, no Python frames (beside Snakemake's line naming profiles/default)
    (line,) = [line for line in done.stdout.strip().splitlines() if not line.startswith("Using workflow specific profile")]
    assert line.startswith("error: invalid study config: model.activation")


class _Scripts(__import__("html.parser").parser.HTMLParser):
    """Collects the text of every <script> element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self._inside = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._inside = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._inside = False

    def handle_data(self, data):
        if self._inside:
            self.scripts[-1] += data


def test_a_script_in_a_csv_header_runs_in_neither_report(tmp_path):
    """Variant labels come from CSV headers; they must never reach a page as markup."""
    header = "a</script><script>document.title='PWNED'</script>"
    rows = [f"{i % 5},{(i * 7) % 3},{i % 2}" for i in range(40)]
    (tmp_path / "table.csv").write_text(f"{header},b,label\n" + "\n".join(rows) + "\n")
    config = {
        "study": "hostile",
        "seeds": [1],
        "dataset": {"name": "csv", "path": str(tmp_path / "table.csv")},
        "model": {"hidden_units": [4]},
        "training": {"epochs": 1, "early_stopping_patience": 0},
        "families": {"input": {"groups": [{"kind": "features"}]}},
    }
    path = write_config(tmp_path, config)
    snakemake(tmp_path, path, "--cores", "2")
    snakemake(tmp_path, path, "--report", str(tmp_path / "snakemake-report.html"))
    ours = (tmp_path / "reports" / "hostile" / "report.html").read_text()
    assert "without a&lt;/script&gt;&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in ours, "the label is shown, escaped"
    for page in (ours, (tmp_path / "snakemake-report.html").read_text()):
        parser = _Scripts()
        parser.feed(page)
        assert not [script for script in parser.scripts if "PWNED" in script], "an injected script element"


def test_corrupted_artifacts_are_named_and_a_rerun_rebuilds_what_is_missing(tmp_path):
    """Snakemake trusts a file that exists; the digests recorded at write time do not."""
    import shutil
    import sys

    config = {**SMALL, "families": {}, "training": {"epochs": 1, "early_stopping_patience": 0}}
    path = write_config(tmp_path, config)
    snakemake(tmp_path, path, "--cores", "2")
    (run_dir,) = (tmp_path / "results").glob("digits-*/*/seed1")
    model, predictions = run_dir / "model.keras", run_dir / "predictions.npz"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    data = bytearray(predictions.read_bytes())
    data[-200:-100] = bytes(100)
    predictions.write_bytes(bytes(data))  # corrupted, same size

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ablation_lab", "verify", str(path)], cwd=tmp_path, capture_output=True, text=True, check=False
        )

    found = verify()
    assert found.returncode == 1
    assert f"{model.relative_to(tmp_path)} is corrupted or truncated" in found.stdout
    assert f"{predictions.relative_to(tmp_path)} is corrupted or truncated" in found.stdout

    (evaluation,) = run_dir.glob("evaluation/*.csv")
    evaluation.unlink()  # a deleted table is rebuilt by a plain rerun; here from corrupted predictions: refused
    refused = snakemake(tmp_path, path, "--cores", "2", check=False)
    assert refused.returncode != 0
    assert "predictions.npz is corrupted or truncated" in refused.stdout

    shutil.rmtree(run_dir)  # what the message advises
    rebuilt = snakemake(tmp_path, path, "--cores", "2", "--forcerun", "aggregate")
    assert "rule train:" in rebuilt.stdout and evaluation.exists()
    assert verify().returncode == 0

    (history,) = (tmp_path / "results").glob("digits-*/*/seed1/history.csv")
    with open(history, "a") as handle:
        handle.write("99,0.1,0.9,0.1,0.9\n")  # a valid CSV still: only its digest tells
    refused = snakemake(tmp_path, path, "--cores", "2", "--forcerun", "aggregate", check=False)
    assert refused.returncode != 0
    assert f"{history.relative_to(tmp_path)} is corrupted or truncated" in refused.stdout


def group_members(group: int) -> dict[int, str]:
    """PID -> command line of every live process in a process group (a test's Snakemake run)."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[-1].split()
            if fields[0] != "Z" and int(fields[2]) == group:  # state, ppid, pgrp (proc(5))
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                members[int(stat.parent.name)] = cmdline
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the run's processes in /proc")
def test_no_job_or_worker_outlives_a_sigkilled_snakemake_by_more_than_10_s(tmp_path):
    """SIGKILL reaches Snakemake alone (no onerror, no cleanup): its training jobs and warm
    workers, which share its process group, notice and stop within seconds (watchdog.py)."""
    config = {**SMALL, "training": {"epochs": 2000, "early_stopping_patience": 0}, "families": {"dropout": {"rates": [0.5]}}}
    run = start(tmp_path, write_config(tmp_path, config), "--cores", "2")
    try:

        def training() -> bool:
            members = group_members(run.pid).values()
            workers = [c for c in members if "ablation_lab.runtime.worker" in c]
            return len(workers) == 2 and any("run_job.py train" in c for c in members) and any((tmp_path / "logs").rglob("train.log"))

        wait_for(training, timeout=90, poll=0.2)
        time.sleep(2)  # a job under way in a (warm) worker
        os.kill(run.pid, signal.SIGKILL)  # Snakemake alone
        run.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: not group_members(run.pid), timeout=10, poll=0.1)
        print(f"last job or worker stopped {time.monotonic() - killed:.1f} s after Snakemake was killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # whatever outlived it, so a failure leaves nothing running
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("train.log"))
    assert f"Snakemake (process {run.pid}) is gone: stopping this" in logs


def test_a_deleted_model_is_listed_by_verify_and_rebuilt_by_a_plain_rerun(tmp_path):
    """Every run file is a target of `rule all`: Snakemake otherwise rebuilds a missing
    intermediate file only for a job it has to run, and a rerun said "Nothing to be done"."""
    import sys

    config = {**SMALL, "families": {}, "training": {"epochs": 1, "early_stopping_patience": 0}}
    path = write_config(tmp_path, config)
    snakemake(tmp_path, path, "--cores", "2")
    (model,) = (tmp_path / "results").glob("digits-*/*/seed1/model.keras")
    model.unlink()

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ablation_lab", "verify", str(path)], cwd=tmp_path, capture_output=True, text=True, check=False
        )

    found = verify()
    assert found.returncode == 1 and f"{model.relative_to(tmp_path)} is missing" in found.stdout
    rebuilt = snakemake(tmp_path, path, "--cores", "2")
    assert "rule train:" in rebuilt.stdout and model.exists()
    assert verify().returncode == 0
