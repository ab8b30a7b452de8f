"""The SLURM profile against a real SLURM scheduler: a one-node cluster started on this machine.

Marked `cluster` (not in the default `pytest -q`): `make test-cluster` runs it, as root on
Debian, and CI runs that after `make test`. The module starts the cluster with
tests/cluster/start.sh and stops it with tests/cluster/stop.sh whatever happens. Every
Snakemake run is wrapped in `timeout -s INT -k 30`: Snakemake ignores SIGTERM while it waits
for SLURM, and a run that never ends would hang CI.

The study is run with the README's own command, so the documentation is what is tested.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, snakemake

pytestmark = pytest.mark.cluster

CLUSTER = ROOT / "tests" / "cluster"
ACCOUNT, PARTITION = "ablation", "debug"  # what start.sh registers (its defaults)
STUDY_TIMEOUT = 1200  # seconds for the whole study through SLURM (about 8 minutes here)
FAILURE_TIMEOUT = 420  # seconds for the failing run: data prep, a training and its retry
# Polling SLURM every 5 s instead of the plugin's default 40 s keeps the test short; it is
# the only option added to the README's command.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "5")
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")
TIMING_COLUMNS = {"train_seconds"}  # wall-clock measurements: the only numbers allowed to differ


def readme_command() -> list[str]:
    """The README's smoke-test command for the SLURM profile (the line naming config/test.yaml)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if line.startswith("snakemake --workflow-profile profiles/slurm") and "config/test.yaml" in line:
            return shlex.split(line, comments=True)
    raise AssertionError("README's 'Running on a cluster' lacks the smoke-test command naming config/test.yaml")


def in_checkout(args: list[str]) -> list[str]:
    """The README's arguments with its relative paths (the profile, the config) made absolute."""
    return [str(ROOT / arg) if (ROOT / arg).exists() and not arg.startswith("-") else arg for arg in args]


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """A running single-node SLURM cluster; the environment a user would export for the profile."""
    started = subprocess.run([str(CLUSTER / "start.sh")], capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, f"tests/cluster/start.sh failed:\n{started.stdout}\n{started.stderr}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ABLATION_LAB_", "SLURM_"))}
        yield env | {"ABLATION_LAB_SLURM_ACCOUNT": ACCOUNT, "ABLATION_LAB_SLURM_PARTITION": PARTITION}
    finally:
        subprocess.run([str(CLUSTER / "stop.sh")], capture_output=True, text=True, timeout=120)


def run_on_slurm(workdir: Path, env: dict[str, str], timeout: int, *extra: str) -> subprocess.CompletedProcess:
    """The README command in `workdir`, under `timeout -s INT`; stdout holds stdout and stderr."""
    command = in_checkout(readme_command())
    assert command[0] == "snakemake"
    command = [SNAKEMAKE, *command[1:], "--snakefile", str(ROOT / "Snakefile"), *FAST_POLLING, *extra]
    wrapped = ["timeout", "-s", "INT", "-k", "30", str(timeout), *command]
    done = subprocess.run(wrapped, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout + 60)
    assert done.returncode not in (124, 137), f"Snakemake on SLURM ran past {timeout} s and was stopped:\n{done.stdout[-6000:]}"
    return done


def sacct(*job_ids: str) -> dict[str, dict[str, str]]:
    """SLURM's accounting record (state, requested memory, exit code) of each job."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,ReqMem,ExitCode"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return {row[0]: {"state": row[1], "mem": row[2], "exit": row[3]} for row in rows}


def job_log_slurm_id(path: Path) -> str:
    """The SLURM job a workflow job's work ran in, from the last line its log writes."""
    found = re.search(r"SLURM job (\d+)\)", path.read_text())
    assert found, f"{path} does not say which SLURM job ran it:\n{path.read_text()[-1500:]}"
    return found.group(1)


def study_tables(workdir: Path, config: dict) -> dict[str, pd.DataFrame]:
    """The study's aggregated tables (ablation_lab.study owns where they are), timings dropped."""
    from ablation_lab.study import Study

    folder = workdir / Study.from_config(config).tables_dir()
    tables = {}
    for path in sorted(folder.glob("*.csv")):
        table = pd.read_csv(path)
        table = table.drop(columns=[c for c in table.columns if c in TIMING_COLUMNS])
        if "metric" in table.columns:
            table = table[~table["metric"].isin(TIMING_COLUMNS)].reset_index(drop=True)
        tables[path.name] = table
    assert tables, f"no tables in {folder}"
    return tables


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "config" / "test.yaml").read_text())


@pytest.fixture(scope="module")
def failed_run(slurm, config, tmp_path_factory):
    """One training made to raise on its node (ABLATION_LAB_FAIL_RUNS), with one retry."""
    from ablation_lab import study as paths
    from ablation_lab.study import Study

    study = Study.from_config(config)
    run = next(iter(study.runs))
    seed = study.seeds[0]
    workdir = tmp_path_factory.mktemp("slurm-failure")
    target = paths.run_file("provenance", study.data_key, run, seed)
    env = slurm | {"ABLATION_LAB_FAIL_RUNS": run}
    done = run_on_slurm(workdir, env, FAILURE_TIMEOUT, "--retries", "1", target)
    return workdir, run, done.returncode, done.stdout


@pytest.fixture(scope="module")
def study_run(slurm, config, tmp_path_factory):
    """The whole test study through SLURM, with the README's command."""
    workdir = tmp_path_factory.mktemp("slurm-study")
    done = run_on_slurm(workdir, slurm, STUDY_TIMEOUT)
    assert done.returncode == 0, f"the study failed on SLURM:\n{done.stdout[-8000:]}"
    return workdir, done.stdout


def test_a_failing_training_is_reported_with_slurm_reason_and_log_and_retried_with_more_memory(failed_run):
    workdir, run, returncode, output = failed_run
    assert returncode != 0, f"the injected failure did not fail the run:\n{output[-4000:]}"
    # One line per failed SLURM job (the workflow's onerror: Snakemake drops the plugin's
    # message for group jobs): SLURM's state, exit code and reason, and the job's SLURM log.
    print("\n".join(line for line in output.splitlines() if "SLURM" in line))  # shown by make test-cluster (-rA)
    reported = re.findall(r"SLURM job (\d+) (\w+) \(exit code ([\d:]+), reason: ([^)]*)\); its SLURM log: (\S+)", output)
    assert reported, f"Snakemake did not report the SLURM failure:\n{output[-4000:]}"
    submitted = dict(SUBMITTED.findall(output))
    for job_id, state, exit_code, _, slurm_log in reported:
        assert state == "FAILED" and exit_code != "0:0"
        assert submitted[job_id] == slurm_log
        assert "InjectedFailure" in Path(slurm_log).read_text(), f"{slurm_log} lacks the job's error"
    # The training was tried twice (--retries 1), the second time with twice the memory.
    records = sacct(*submitted)
    failed = [records[job_id] for job_id, *_ in reported]
    assert len(failed) == 2, f"expected the failure and its retry: {records}"
    assert [record["mem"] for record in failed] == ["2000M", "4000M"]
    assert not list(workdir.glob(f"results/*/{run}/seed*/model.keras")), "a failed training left a model behind"


def test_every_training_ran_in_a_slurm_job_listed_by_sacct(study_run, config):
    from ablation_lab import study as paths
    from ablation_lab.study import Study

    workdir, output = study_run
    submitted = dict(SUBMITTED.findall(output))
    snakemake_log = Path(re.search(r"Complete log\(s\): (\S+)", output).group(1)).read_text()
    assert set(SUBMITTED.findall(snakemake_log)) == set(submitted.items()), "the Snakemake log lists other SLURM jobs"
    records = sacct(*submitted)
    print(f"sbatch job ids of the study, as sacct lists them: {', '.join(sorted(records, key=int))}")  # shown by make test-cluster (-rA)
    assert set(records) == set(submitted), f"sacct does not know every submitted job: {sorted(set(submitted) - set(records))}"
    assert {r["state"] for r in records.values()} == {"COMPLETED"}, records
    study = Study.from_config(config)
    for run in study.runs:
        for seed in study.seeds:
            train_log = workdir / paths.job_log("train", study.data_key, run, seed)
            trained_in = job_log_slurm_id(train_log)
            assert trained_in in submitted, f"training of {run} ran in SLURM job {trained_in}, which Snakemake never submitted"
            # Grouping: every analysis of this model (its logs sit beside the training's) ran in the same SLURM job.
            analysis_logs = [log for log in train_log.parent.glob("*.log") if log != train_log]
            assert analysis_logs, f"no analysis logs beside {train_log}"
            for log in analysis_logs:
                assert job_log_slurm_id(log) == trained_in, f"{log} ran apart from its model's training"


def test_grouping_submits_one_job_per_model_not_one_per_analysis(study_run, config):
    _, output = study_run
    submitted = dict(SUBMITTED.findall(output))
    finished = re.findall(r"Finished jobid: \S+ \(Rule: (\w+)\)", output)
    rules = pd.Series(finished).value_counts().to_dict()
    assert rules["analyse_run"] > rules["train"]
    ungrouped = sum(n for rule, n in rules.items() if rule not in ("train", "analyse_run", "all"))
    assert len(submitted) == rules["train"] + ungrouped, f"{len(submitted)} submissions for {rules}"


def test_the_study_tables_equal_a_local_runs(study_run, config, tmp_path_factory):
    workdir, _ = study_run
    local = tmp_path_factory.mktemp("local-study")
    snakemake(local, ROOT / "config" / "test.yaml", "--cores", "2")
    on_slurm, here = study_tables(workdir, config), study_tables(local, config)
    assert on_slurm.keys() == here.keys()
    for name, table in here.items():
        pd.testing.assert_frame_equal(on_slurm[name], table, check_exact=True, obj=name)
