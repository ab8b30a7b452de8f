"""Studies of a researcher's kind of model, end to end: the built-in CNN, and a .keras file the test saves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import snakemake, write_config

pytestmark = pytest.mark.workflow

SECTIONS = ("overview", "findings", "training", "knockout", "calibration", "elasticity", "provenance")
TRAINING = {"epochs": 2, "batch_size": 64, "early_stopping_patience": 0}
POSTHOC = {"fractions": [0.0, 0.5], "orderings": ["random", "magnitude_smallest"], "draws": 1, "families": ["baseline"]}


def digits_study(name: str, model: dict, families: dict, **extra) -> dict:
    return {
        "study": name,
        "seeds": [1],
        "dataset": {"name": "digits", "validation_fraction": 0.2, "test_fraction": 0.25, "split_seed": 42},
        "model": model,
        "training": TRAINING,
        "families": families,
        "calibration": {"bins": 10},
        "elasticity": {"samples": 30},
        **extra,
    }


def saved_cnn(path: Path) -> Path:
    """A small CNN on 8 x 8 digits, trained for a few epochs and saved, as a researcher would."""
    import keras
    from ablation_lab.training.train import configure_tensorflow
    from keras import layers
    from sklearn.datasets import load_digits

    configure_tensorflow(1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="pixels")
    x = layers.Reshape((8, 8, 1), name="channels")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(24, activation="relu", name="dense")(x)
    x = layers.Dropout(0.2, name="drop")(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="classes")(x))
    digits = load_digits()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.images / 16.0, digits.target, epochs=3, verbose=0)
    model.save(path)
    return path


def test_a_cnn_study_on_digits_runs_every_family_and_reports_every_section(tmp_path):
    families = {
        "dropout": {"rates": [0.0, 0.3]},
        "activation": {"functions": ["relu", "tanh"]},
        "input": {"groups": [{"kind": "columns", "size": 4}]},
        "noise": {"levels": [0.0, 0.3], "apply_to": ["both", "test"]},
        "capacity": {"widths": [4], "depths": [1]},
    }
    model = {"kind": "cnn", "filters": [4, 8], "hidden_units": [16], "activation": "relu", "dropout": 0.0}
    config = digits_study("cnn", model, families, posthoc={**POSTHOC, "compensation": True})
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    page = (tmp_path / "reports" / "cnn" / "report.html").read_text()
    for family in ["baseline", *families, "units", "input_posthoc", "noise_posthoc"]:
        assert f'id="family-{family}"' in page, family
    for section in (*SECTIONS, "compensation"):
        assert f'id="{section}"' in page, section
    assert "CNN with conv blocks of 4-8 filters" in page
    tables = tmp_path / "reports" / "cnn" / "tables"
    knockout = pd.read_csv(tables / "knockout.csv")
    assert {"conv_act_1", "conv_act_2", "hidden_1"} <= set(knockout["layer"])  # channels of each conv block, units of the head
    elasticity = pd.read_csv(tables / "elasticity.csv")
    assert {"baseline", "activation"} <= set(elasticity["family"]) and "auc" in set(elasticity["metric"])


def test_a_model_file_study_runs_retrain_and_posthoc_families_and_names_the_file(tmp_path):
    path = saved_cnn(tmp_path / "my_net.keras")
    families = {
        "dropout": {"rates": [0.0, 0.5]},
        "activation": {"functions": ["relu", "tanh"]},
        "noise": {"levels": [0.3], "apply_to": ["both", "test"]},
    }
    model = {"kind": "file", "path": str(path), "weights": "as_saved"}
    config = digits_study("own", model, families, posthoc={**POSTHOC, "compensation": False})
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    report = tmp_path / "reports" / "own"
    page = (report / "report.html").read_text()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"the model file {path} (sha256 {sha}), its own saved weights for the baseline" in page
    for family in ["baseline", *families]:
        assert f'id="family-{family}"' in page, family
    for section in SECTIONS:
        assert f'id="{section}"' in page, section
    assert "Saved weights: activation/relu, baseline/reference, noise/gauss-0.3-testonly use the model file" in page
    runs = pd.read_csv(report / "tables" / "runs.csv")
    by_variant = dict(zip(runs["family"] + "/" + runs["variant"], runs["run"], strict=True))
    assert by_variant["activation/relu"] == by_variant["baseline/reference"]  # relu everywhere already: the file's own run
    assert by_variant["noise/gauss-0.3-testonly"] == by_variant["baseline/reference"]  # test-time noise on the saved weights
    assert "-saved" not in by_variant["noise/gauss-0.3"]  # trained on noisy inputs: retrained, not the saved weights
    assert by_variant["dropout/rate-0.5"] != by_variant["baseline/reference"]
    knockout = pd.read_csv(report / "tables" / "knockout.csv")
    assert {"conv", "dense"} <= set(knockout["layer"])  # channels of the conv layer, units of the dense one


def test_a_study_that_trains_nothing_still_reports(tmp_path):
    """A model file with its saved weights and no family: no training job, an empty history."""
    path = saved_cnn(tmp_path / "my_net.keras")
    config = digits_study("saved", {"kind": "file", "path": str(path), "weights": "as_saved"}, {})
    done = snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    assert "rule train:" in done.stdout  # the saved model's run folder, written without training
    page = (tmp_path / "reports" / "saved" / "report.html").read_text()
    assert 'id="family-baseline"' in page and 'id="training"' not in page
    assert pd.read_csv(tmp_path / "reports" / "saved" / "tables" / "history.csv").empty
