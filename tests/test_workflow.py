"""The workflow end to end on config/test.yaml, and caching decisions read from dry runs."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, planned_jobs, runs_of, snakemake, trained, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture
def finished(smoke_study):
    """One complete run of the test study (conftest, shared with the browser test); later tests only dry-run against it."""
    workdir, config = smoke_study
    return workdir, copy.deepcopy(config)


def test_report_has_a_section_per_family_with_figures(finished):
    workdir, _ = finished
    page = (workdir / "reports" / "smoke" / "report.html").read_text()
    for family in ["baseline", "dropout", "activation", "input", "noise", "capacity", "nsdropout", "noise-x-dropout"]:
        assert f'id="family-{family}"' in page
    # 10 family figures (7 declared + units, input_posthoc, noise_posthoc), 4 example galleries,
    # the learning curves, the knockout curves, 3 compensation overlays, the reliability diagrams,
    # NSDropout's inference modes, the learned activation shapes, the local elasticity figure
    # and the overview's forest plot
    assert page.count("data:image/png;base64,") == 24
    assert 'id="activation_shapes"' in page
    assert 'id="nsdropout"' in page and "oracle (true label's mask: label leakage)" in page
    assert 'id="training"' in page and "Every model was trained for a single epoch." in page
    assert 'id="calibration"' in page
    assert 'id="elasticity"' in page and "claim that non-linear activations are more locally elastic than a linear one" in page
    assert 'id="overview"' in page and 'id="findings"' in page and 'id="provenance"' in page
    assert "Variants that resolve to the same trained model share it" in page
    tidy = pd.read_parquet(workdir / "reports" / "smoke" / "tables" / "metrics.parquet")
    assert set(tidy["metric"]) >= {"accuracy", "error_rate", "loss", "macro_f1"}
    accuracy = tidy.query("metric == 'accuracy'")
    assert len(accuracy) == 30 and accuracy["value"].between(0, 1).all()
    assert accuracy["run"].nunique() == 11, "30 variants, 11 trained models"
    modes = pd.read_csv(workdir / "reports" / "smoke" / "tables" / "nsdropout_summary.csv")
    assert set(modes["mode"]) == {"standard", "oracle", "none", "average", "max-over-classes"}


def test_report_has_the_knockout_and_compensation_sections(finished):
    workdir, _ = finished
    page = (workdir / "reports" / "smoke" / "report.html").read_text()
    assert 'id="knockout"' in page and 'id="compensation"' in page
    assert "effects are lower bounds" not in page, "what was measured, not what a paper says should happen"
    assert "feeds the output layer directly" in page and "train/test mismatch" in page  # the smoke model: one hidden layer
    tables = workdir / "reports" / "smoke" / "tables"
    gaps = pd.read_csv(tables / "compensation.csv")
    assert set(gaps["comparison"]) == {"units", "input", "noise"}
    assert (gaps.query("point == 'frac-0'")["gap"].abs() < 1e-12).all(), "nothing removed: both sides are the baseline"
    curves = pd.read_csv(tables / "knockout.csv")
    assert set(curves["ordering"].dropna()) >= {"random", "importance_highest"}
    for name in ("knockout", "compensation-units", "compensation-input", "compensation-noise"):
        assert (workdir / "reports" / "smoke" / "figures" / f"{name}.png").stat().st_size > 0


def test_changing_a_knockout_fraction_reruns_only_post_hoc_jobs(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["posthoc"]["fractions"] = [0.0, 0.25]
    changed["posthoc"]["compensation"] = False  # with it, a new fraction also adds its width retrain
    out = snakemake(workdir, write_config(workdir, changed, "posthoc.yaml"), "--dry-run")
    assert trained(out.stdout) == set()
    planned = planned_jobs(out.stdout)
    assert {job["analysis"] for job in planned["analyse_run"]} == {"knockout"}
    assert "rule prepare_data:" not in out.stdout


def test_test_only_noise_evaluates_the_clean_model_on_noisy_test_inputs(finished):
    workdir, _ = finished
    runs = pd.read_csv(workdir / "reports" / "smoke" / "tables" / "runs.csv").set_index(["family", "variant"])
    clean, noisy = runs.loc[("baseline", "reference")], runs.loc[("noise", "gauss-0.3-testonly")]
    assert clean["run"] == noisy["run"]
    assert noisy["accuracy"] < clean["accuracy"]
    assert runs.loc[("noise", "gauss-0-testonly"), "accuracy"] == clean["accuracy"]


def test_each_run_directory_holds_model_history_predictions_metrics_and_provenance(finished):
    from ablation_lab.study import Study

    workdir, config = finished
    study = Study.from_config(config)
    variant = study.variants["noise/gauss-0.3"]
    run = workdir / study.run_dir(variant, 1)
    for name in ["model.keras", "history.csv", "predictions.npz", "provenance.json"]:
        assert (run / name).stat().st_size > 0
    assert (workdir / study.probe_file(variant, 1)).stat().st_size > 0
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["seed"] == 1 and provenance["status"] == "ok"
    assert provenance["spec"]["transforms"][0] == {"op": "noise", "kind": "gaussian", "level": 0.3, "apply_to": "both"}
    assert {"keras", "numpy", "python", "ablation_lab"} <= set(provenance["versions"])
    assert len(provenance["workflow"]["commit"]) == 40 and provenance["workflow"]["dirty"] in (True, False)
    assert not list(run.glob(".*")), "no temporary files are left behind"
    assert (workdir / "logs" / study.data_key / study.run_of(variant) / "seed1" / "train.log").exists()


def test_tensorboard_logs_hold_every_trained_run_and_turning_them_off_retrains_nothing(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, config = finished
    logs = workdir / "reports" / "smoke" / "tensorboard"
    curves = EventAccumulator(str(logs / "noise" / "gauss-0.3" / "seed1" / "train"))
    curves.Reload()
    assert set(curves.Tags()["tensors"]) == {"epoch_loss", "epoch_accuracy"}
    assert len(list(logs.glob("*/*/seed1"))) == len(pd.read_csv(workdir / "reports" / "smoke" / "tables" / "runs.csv"))
    out = snakemake(workdir, write_config(workdir, {**config, "tensorboard": False}, "no-tensorboard.yaml"), "--dry-run")
    assert set(planned_jobs(out.stdout)) <= {"report_html", "all"}  # the page prints the study file; nothing is retrained


def test_noop_rerun_has_nothing_to_do(finished):
    workdir, config = finished
    out = snakemake(workdir, write_config(workdir, config, "same.yaml"), "--dry-run")
    assert "Nothing to be done" in out.stdout


def test_changing_one_dropout_rate_retrains_only_that_variant(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["families"]["dropout"]["rates"] = [0.0, 0.4]
    out = snakemake(workdir, write_config(workdir, changed, "changed.yaml"), "--dry-run")
    # the dropout variant, and the combination cells with training-time noise that cross it
    expected = runs_of(changed, "dropout/rate-0.4", "noise-x-dropout/gauss-0.3__rate-0.4")
    assert trained(out.stdout) == {(run, 1) for run in expected}
    assert len(expected) == 2, "gauss-0 and test-only cells reuse dropout/rate-0.4's model"
    assert "rule aggregate:" in out.stdout and "rule report_html:" in out.stdout
    assert "rule prepare_data:" not in out.stdout


def test_adding_a_seed_trains_only_the_new_seed(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["seeds"] = [1, 2]
    planned = trained(snakemake(workdir, write_config(workdir, changed, "seeds.yaml"), "--dry-run").stdout)
    assert {seed for _, seed in planned} == {2}
    assert len(planned) == 11


def test_adding_a_noise_level_trains_only_the_new_variant(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["families"]["noise"]["levels"] = [0.0, 0.3, 0.5]
    planned = trained(snakemake(workdir, write_config(workdir, changed, "noise.yaml"), "--dry-run").stdout)
    expected = runs_of(changed, "noise/gauss-0.5", "noise-x-dropout/gauss-0.5__rate-0.5")
    assert planned == {(run, 1) for run in expected}


def test_changing_training_settings_retrains_everything(finished):
    workdir, config = finished
    changed = copy.deepcopy(config)
    changed["training"]["epochs"] = 2
    assert len(trained(snakemake(workdir, write_config(workdir, changed, "epochs.yaml"), "--dry-run").stdout)) == 11


def test_two_studies_on_one_dataset_never_touch_each_other(finished):
    """A second study with other training settings trains its own runs; the first stays done."""
    workdir, config = finished
    other = {**copy.deepcopy(config), "study": "other", "families": {"dropout": {"rates": [0.5]}}, "combinations": []}
    other["training"]["batch_size"] = 32
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    done = snakemake(workdir, write_config(workdir, other, "other.yaml"), "--cores", "2")
    assert "rule train:" in done.stdout and "rule prepare_data:" not in done.stdout
    assert (workdir / "reports" / "other" / "report.html").exists()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "the second study rewrote the first's artifacts"
    again = snakemake(workdir, write_config(workdir, config, "first-again.yaml"), "--dry-run")
    assert "Nothing to be done" in again.stdout
    back = snakemake(workdir, write_config(workdir, other, "other-again.yaml"), "--dry-run")
    assert "Nothing to be done" in back.stdout


def test_editing_the_data_file_prepares_a_new_split_and_trains_on_it(tmp_path):
    table = tmp_path / "table.csv"
    rows = [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(60)]
    table.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    config = {
        "study": "edit",
        "seeds": [1],
        "dataset": {"name": "csv", "path": str(table)},
        "model": {"hidden_units": [4]},
        "training": {"epochs": 1, "early_stopping_patience": 0},
    }
    path = write_config(tmp_path, config)
    snakemake(tmp_path, path, "--cores", "2")
    assert "Nothing to be done" in snakemake(tmp_path, path, "--dry-run").stdout
    table.write_text("a,b,label\n" + "\n".join(r for r in rows if not r.endswith(",1")) + "\n" + "0,0,2\n1,1,2\n2,2,2\n3,3,2\n4,4,2\n")
    planned = snakemake(tmp_path, path, "--dry-run").stdout
    assert "rule prepare_data:" in planned and len(trained(planned)) == 1


def test_the_default_study_plans_its_trainings_and_analyses(tmp_path):
    article = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    retrain_only = {k: v for k, v in article.items() if k not in ("posthoc", "calibration", "elasticity")}
    jobs = planned_jobs(snakemake(tmp_path, write_config(tmp_path, retrain_only), "--dry-run").stdout)
    # 25 variants, 22 distinct models x 3 seeds; evaluations, and the learned shapes of the 6
    # activation-family models (the baseline shares relu's)
    assert len(jobs["train"]) == 66 and len(jobs["analyse_run"]) == 66 + 6 * 3
    jobs = planned_jobs(snakemake(tmp_path, ROOT / "config" / "config.yaml", "--dry-run").stdout)
    # + 9 width retrains x 3 seeds; evaluations and calibrations of 31 models and 12 test-time
    # views of the baseline x 3 seeds; 5 knockouts x 3 seeds; local elasticity and learned
    # shapes of the 6 activation-family models x 3 seeds
    assert len(jobs["train"]) == 93
    assert len(jobs["analyse_run"]) == 2 * 3 * (31 + 12) + 5 * 3 + 2 * 6 * 3


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
    assert (
        "unknown key 'dropuot' in families (did you mean 'dropout' for 'dropuot'?; allowed keys: activation, capacity, dropout, input, labels, noise, nsdropout)"
        in done.stdout
    )
    assert not (tmp_path / "results").exists()


def test_compare_puts_two_finished_studies_side_by_side(finished):
    import subprocess
    import sys

    workdir, config = finished
    other = {key: config[key] for key in ("seeds", "dataset", "model", "training")}
    other |= {"study": "smoke-b", "families": {"dropout": {"rates": [0.5, 0.3]}}}
    snakemake(workdir, write_config(workdir, other, "smoke-b.yaml"), "--cores", "2")
    a = write_config(workdir, config, "smoke.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "ablation_lab", "compare", str(a), str(workdir / "smoke-b.yaml")],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(workdir / "reports" / "compare" / "smoke--smoke-b" / "compare.csv")
    found = dict(zip(table["family"] + "/" + table["variant"], table["in"], strict=True))
    assert found["dropout/rate-0.5"] == "both" and found["dropout/rate-0.3"] == "only smoke-b" and found["noise/gauss-0.3"] == "only smoke"
    page = (workdir / "reports" / "compare" / "smoke--smoke-b" / "compare.html").read_text()
    assert "they share 1 seed(s)" in page  # one seed: no paired interval, and the page says why
