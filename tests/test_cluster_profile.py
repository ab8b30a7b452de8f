"""The SLURM profile and the cluster-facing parts of the package, without a cluster (fast).

tests/test_cluster.py runs the profile against a real SLURM scheduler (`make test-cluster`).
"""

from __future__ import annotations

import re

import pytest
import yaml
from ablation_lab.config import validate_config
from ablation_lab.runtime.cluster import failed_slurm_jobs, report_slurm_failures
from ablation_lab.runtime.dispatch import servable, where
from ablation_lab.runtime.jobs import FAIL_RUNS_ENV, InjectedFailure, fail_if_injected
from ablation_lab.study import Study
from conftest import ROOT
from workflow_helpers import snakemake, write_config

PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_profile_submits_to_slurm_with_retries_and_rerun_incomplete(profile):
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert profile["latency-wait"] >= 30 and profile["jobs"] >= 1


def test_profile_keeps_site_values_in_the_environment_and_resources_in_the_rules(profile):
    # Site values are placeholders filled from the environment; no per-rule resources here.
    assert profile["default-resources"] == {
        "slurm_account": "'$ABLATION_LAB_SLURM_ACCOUNT'",
        "slurm_partition": "'$ABLATION_LAB_SLURM_PARTITION'",
    }
    assert "set-resources" not in profile and "set-threads" not in profile
    # Snakemake loads profiles/default/ on its own: it holds local scheduling settings, no cluster settings.
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert default == {"scheduler": "greedy"}


def test_profile_groups_each_training_with_its_analyses(profile):
    groups = profile["groups"]
    assert groups["train"] == groups["analyse_run"]
    assert profile["group-components"] == {groups["train"]: 1}


@pytest.mark.runtime
def test_training_jobs_request_the_configured_gpu_and_the_site_values(tmp_path, test_config, monkeypatch):
    monkeypatch.setenv("ABLATION_LAB_SLURM_ACCOUNT", "acct-x")
    monkeypatch.setenv("ABLATION_LAB_SLURM_PARTITION", "part-y")
    config = write_config(tmp_path, {**test_config, "resources": {"gpu": 1}})
    output = snakemake(tmp_path, config, "--workflow-profile", str(PROFILE.parent), "--dry-run").stdout
    # One group job per trained model (run, seed), each holding its training and that model's analyses.
    models = len(Study.from_config(validate_config(test_config)).training_files())
    assert models == 11 and output.count("Group job run ") == models
    trainings = re.findall(r"^\s*rule train:\n(?:.*\n)*?\s*resources: (.*)$", output, flags=re.MULTILINE)
    assert len(trainings) == models
    for resources in trainings:
        assert "gpu=1" in resources and "mem_mb=2000," in resources
        assert "slurm_account=acct-x" in resources and "slurm_partition=part-y" in resources


def test_only_cpu_single_thread_jobs_go_to_warm_workers(monkeypatch):
    monkeypatch.delenv("ABLATION_LAB_WORKERS", raising=False)
    assert servable("train", {"threads": 1, "gpu": 0})
    assert not servable("train", {"threads": 1, "gpu": 1}), "workers hide the GPU: a GPU job needs its own process"
    assert not servable("train", {"threads": 2})
    assert servable("aggregate", {})  # the study's tail: a worker holds its imports
    assert not servable("prepare_data", {})  # runs while the workers are still importing
    monkeypatch.setenv("ABLATION_LAB_WORKERS", "0")
    assert not servable("train", {"threads": 1, "gpu": 0}) and not servable("aggregate", {})


def test_a_job_log_names_the_slurm_job_it_ran_in(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert "SLURM" not in where()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert where().endswith(", SLURM job 4242")


def test_injected_failure_raises_only_for_the_named_runs(monkeypatch):
    monkeypatch.delenv(FAIL_RUNS_ENV, raising=False)
    fail_if_injected("relu-16-de04d3dfaf")  # unset: nothing happens
    monkeypatch.setenv(FAIL_RUNS_ENV, "linear-*,relu-8-d972b47947")
    fail_if_injected("relu-16-de04d3dfaf")
    for run in ("linear-16-de3789a422", "relu-8-d972b47947"):
        with pytest.raises(InjectedFailure, match=f"names run '{run}'"):
            fail_if_injected(run)


SNAKEMAKE_LOG = """\
Job 5 has been submitted with SLURM jobid 13 (log: /w/.snakemake/slurm_logs/rule_prepare_data/13.log).
Job c8aca171 has been submitted with SLURM jobid 14 (log: /w/.snakemake/slurm_logs/group_run_analyse_run_train/14.log).
Job a614070c has been submitted with SLURM jobid 15 (log: /w/.snakemake/slurm_logs/group_run_analyse_run_train/15.log).
Error in group run
"""


def test_failed_slurm_jobs_are_named_with_state_reason_and_log():
    def sacct(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
        assert job_ids == ["13", "14", "15"]
        return {"13": ("COMPLETED", "0:0", "None"), "14": ("OUT_OF_MEMORY", "0:125", "None"), "15": ("CANCELLED by 0", "0:0", "None")}

    failures = [str(f) for f in failed_slurm_jobs(SNAKEMAKE_LOG, query=sacct)]
    assert failures == [
        "SLURM job 14 OUT_OF_MEMORY (exit code 0:125, reason: None); its SLURM log: /w/.snakemake/slurm_logs/group_run_analyse_run_train/14.log",
        "SLURM job 15 CANCELLED by 0 (exit code 0:0, reason: None); its SLURM log: /w/.snakemake/slurm_logs/group_run_analyse_run_train/15.log",
    ]


def test_a_run_that_submitted_nothing_reports_nothing(tmp_path):
    log = tmp_path / "local.snakemake.log"
    log.write_text("Finished jobid: 3 (Rule: train)\nError in rule train:\n")
    assert report_slurm_failures(str(log)) == [] and report_slurm_failures([str(log)]) == []
    assert report_slurm_failures([str(tmp_path / "missing.log")]) == [] and report_slurm_failures(None) == []
