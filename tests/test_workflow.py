"""The workflow end to end on config/test.yaml, and caching decisions read from dry runs."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, snakemake, trained, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete run of the test study; later tests only dry-run against it."""
    workdir = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    path = write_config(workdir, config)
    snakemake(workdir, path, "--cores", "2")
    return workdir, config


def test_report_has_a_section_per_family_with_figures(finished):
    workdir, _ = finished
    page = (workdir / "reports" / "smoke" / "report.html").read_text()
    for family in ["baseline", "dropout", "activation", "input", "noise", "capacity", "noise-x-dropout"]:
        assert f'id="family-{family}"' in page
    assert page.count("data:image/png;base64,") == 8  # 6 families + 2 example galleries
    assert "The article&#39;s claims, checked" in page or "The article's claims, checked" in page
    tidy = pd.read_parquet(workdir / "reports" / "smoke" / "tables" / "metrics.parquet")
    assert set(tidy["metric"]) >= {"accuracy", "error_rate", "loss", "macro_f1"}
    assert len(tidy.query("metric == 'accuracy'")) == 14
    assert tidy.query("metric == 'accuracy'")["value"].between(0, 1).all()


def test_each_run_directory_holds_model_history_metrics_and_provenance(finished):
    workdir, _ = finished
    run = workdir / "results" / "mnist5k" / "noise" / "gauss-0.3" / "seed1"
    for name in ["model.keras", "history.csv", "predictions.npz", "metrics.csv", "confusion.csv", "provenance.json"]:
        assert (run / name).stat().st_size > 0
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["seed"] == 1 and provenance["status"] == "ok"
    assert provenance["spec"]["transforms"][0] == {"op": "noise", "kind": "gaussian", "level": 0.3, "apply_to": "both"}
    assert {"keras", "numpy", "python", "ablation_lab"} <= set(provenance["versions"])
    assert not list(run.glob(".*")), "no temporary files are left behind"
    assert (workdir / "logs" / "mnist5k" / "noise" / "gauss-0.3" / "seed1" / "train.log").exists()
    assert (workdir / "results" / "benchmarks" / "mnist5k" / "noise" / "gauss-0.3" / "seed1" / "train.tsv").exists()


def test_noop_rerun_has_nothing_to_do(finished):
    workdir, config = finished
    out = snakemake(workdir, write_config(workdir, config, "same.yaml"), "--dry-run")
    assert "Nothing to be done" in out.stdout


def test_changing_one_dropout_rate_retrains_only_that_variant(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["families"]["dropout"]["rates"] = [0.0, 0.4]
    out = snakemake(workdir, write_config(workdir, changed, "changed.yaml"), "--dry-run")
    # the dropout variant, and the combination cells that cross it with each noise level
    assert trained(out.stdout) == {
        ("dropout", "rate-0.4", "1"),
        ("noise-x-dropout", "gauss-0__rate-0.4", "1"),
        ("noise-x-dropout", "gauss-0.3__rate-0.4", "1"),
    }
    assert "rule analyse:" in out.stdout and "rule report_html:" in out.stdout
    assert "rule prepare_data:" not in out.stdout


def test_without_combinations_one_changed_rate_is_one_training_job_per_seed(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["combinations"] = []
    changed["families"]["dropout"]["rates"] = [0.0, 0.4]
    out = snakemake(workdir, write_config(workdir, changed, "no-combos.yaml"), "--dry-run")
    assert trained(out.stdout) == {("dropout", "rate-0.4", "1")}


def test_adding_a_seed_trains_only_the_new_seed(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["seeds"] = [1, 2]
    planned = trained(snakemake(workdir, write_config(workdir, changed, "seeds.yaml"), "--dry-run").stdout)
    assert planned and {seed for _, _, seed in planned} == {"2"}
    assert len(planned) == 14


def test_adding_a_noise_level_trains_only_the_new_variant(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["families"]["noise"]["levels"] = [0.0, 0.3, 0.5]
    planned = trained(snakemake(workdir, write_config(workdir, changed, "noise.yaml"), "--dry-run").stdout)
    assert planned == {
        ("noise", "gauss-0.5", "1"),
        ("noise-x-dropout", "gauss-0.5__rate-0", "1"),
        ("noise-x-dropout", "gauss-0.5__rate-0.5", "1"),
    }


def test_changing_training_settings_retrains_everything(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["training"]["epochs"] = 2
    assert len(trained(snakemake(workdir, write_config(workdir, changed, "epochs.yaml"), "--dry-run").stdout)) == 14


def test_snakemake_report_builds(finished):
    workdir, config = finished
    target = workdir / "snakemake-report.html"
    snakemake(workdir, write_config(workdir, config, "report.yaml"), "--report", str(target))
    assert target.stat().st_size > 100_000


def test_typo_in_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["families"]["dropuot"] = config["families"].pop("dropout")
    config["combinations"] = []
    done = snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2", check=False)
    assert done.returncode != 0
    assert "unknown key 'dropuot' in families (allowed keys: activation, capacity, dropout, input, noise)" in done.stdout
    assert not (tmp_path / "results").exists()
