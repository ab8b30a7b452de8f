"""`python -m ablation_lab`: what `make run` prints, and a check command for study files."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablation_lab", *args], capture_output=True, text=True, cwd=ROOT)


def test_report_path_names_the_study_folder():
    done = run_cli("report-path", "config/config.yaml")
    assert done.returncode == 0
    assert done.stdout.strip() == str(ROOT / "reports" / "article" / "report.html")


def test_check_lists_variants_and_rejects_a_bad_file(tmp_path):
    done = run_cli("check", "config/config.yaml")
    assert done.returncode == 0
    variants = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert variants[0] == "baseline/reference" and "input/cols-24-27" in variants and len(variants) == 48
    assert "activation/gp" in variants and "31 distinct trained models per seed" in done.stderr
    assert "analysis knockout: A fraction of a hidden layer's units removed from the trained model" in done.stderr
    assert "compensation gap: on (units, input, noise)" in done.stderr
    shared = next(line for line in done.stderr.splitlines() if line.startswith("shared model relu-128-"))
    assert "baseline/reference, dropout/rate-0, activation/relu, noise/gauss-0, units/frac-0, input_posthoc/cols-00-03" in shared
    bad = tmp_path / "bad.yaml"
    bad.write_text("families:\n  noise:\n    levels: [-1]\n")
    done = run_cli("check", str(bad))
    assert done.returncode == 2
    assert "families.noise.levels[0]" in done.stderr


def test_more_examples_than_the_split_has_is_refused_before_any_job(tmp_path):
    """elasticity.samples above the test split's size: one line from `check`, not one traceback per job."""
    study = tmp_path / "el.yaml"
    study.write_text("study: el\nseeds: [1]\ndataset: {name: mnist5k, max_samples: 600, test_fraction: 0.25}\nelasticity: {samples: 200}\n")
    done = run_cli("check", str(study))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: invalid study config: elasticity.samples: 200 examples asked, but the test split has 150; lower it to at most 150"
    )
    study.write_text(study.read_text().replace("samples: 200", "samples: 150"))
    assert run_cli("check", str(study)).returncode == 0


def test_check_says_why_a_study_has_knockout_but_no_compensation_gap(tmp_path):
    study = tmp_path / "writes.yaml"
    study.write_text(
        "study: writes\ndataset: {name: digits}\nseeds: [1]\nmodel: {kind: resnet, filters: [4], blocks: 2}\n"
        "families: {}\ncombinations: []\nposthoc: {layers: [block_2]}\n"
    )
    done = run_cli("check", str(study))
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("compensation gap: off"))
    assert line.startswith(
        "compensation gap: off (no units, input_posthoc or noise_posthoc family), because posthoc.layers: "
        "the compensation gap of a residual network narrows"
    )
    assert line.endswith("name one (e.g. block_2_relu_2)")  # no advice to turn off what is off
    assert not any(line.startswith("units/") for line in done.stdout.splitlines())
