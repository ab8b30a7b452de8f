"""TensorBoard logs of a study's runs, read back with TensorBoard's own reader.

The logs are written from the aggregated tables (tables/history.csv, tables/runs.csv); the
layout and tag names are those of Keras's TensorBoard callback, so the curves of these runs
and of a researcher's own `model.fit` runs overlay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.report.tensorboard import run_hparams, write_logs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata
from tensorboard.util.tensor_util import make_ndarray

VARIANTS = [
    {"family": "baseline", "variant": "reference", "coords": {}},
    {"family": "dropout", "variant": "rate-0.5", "coords": {"dropout rate": 0.5}},
    {"family": "dropout", "variant": "rate-0.2", "coords": {"dropout rate": 0.2}},  # trained by no seed here
]


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, runs = [], []
    for v, (family, variant) in enumerate([("baseline", "reference"), ("dropout", "rate-0.5")]):
        for seed in (1, 2):
            for epoch in (1, 2, 3):
                rows.append(
                    {
                        "family": family,
                        "variant": variant,
                        "seed": seed,
                        "epoch": epoch,
                        "loss": 2.0 / epoch + v,
                        "accuracy": 0.3 * epoch,
                        "val_loss": 2.5 / epoch,
                        "val_accuracy": 0.25 * epoch + 0.01 * seed,
                    }
                )
            runs.append({"family": family, "variant": variant, "seed": seed, "accuracy": 0.8 + 0.01 * seed + 0.1 * v, "epochs_trained": 3})
    return pd.DataFrame(rows), pd.DataFrame(runs)


def read(folder) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def values(accumulator: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    """The steps and the values of one tag, in order."""
    events = accumulator.Tensors(tag)
    return [event.step for event in events], [float(make_ndarray(event.tensor_proto)) for event in events]


@pytest.fixture
def logs(tmp_path):
    history, runs = tables()
    assert write_logs(history, runs, VARIANTS, tmp_path / "tb") == 4
    return tmp_path / "tb"


def test_every_run_has_its_training_and_validation_curves_under_keras_tag_names(logs):
    train = read(logs / "dropout" / "rate-0.5" / "seed2" / "train")
    assert set(train.Tags()["tensors"]) == {"epoch_loss", "epoch_accuracy"}
    steps, losses = values(train, "epoch_loss")
    assert steps == [1, 2, 3] and losses == pytest.approx([3.0, 2.0, 2.0 / 3 + 1])
    validation = read(logs / "dropout" / "rate-0.5" / "seed2" / "validation")
    assert values(validation, "epoch_accuracy")[1] == pytest.approx([0.27, 0.52, 0.77])


def test_the_test_metrics_and_hparams_sit_at_the_run_root(logs):
    root = read(logs / "baseline" / "reference" / "seed1")
    steps, accuracy = values(root, "test_accuracy")
    assert steps == [3] and accuracy == pytest.approx([0.81])
    assert "test_loss" not in root.Tags()["tensors"]  # absent from the table: not invented
    start = root.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    info = metadata.parse_session_start_info_plugin_data(start)
    assert info.group_name == "baseline/reference/seed1"
    assert info.hparams["family"].string_value == "baseline" and info.hparams["seed"].number_value == 1


def test_the_study_declares_its_hparams_and_metrics_for_the_dashboard(logs):
    root = read(logs)
    config = metadata.parse_experiment_plugin_data(root.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
    names = [hparam.name for hparam in config.hparam_infos]
    assert names[:3] == ["family", "variant", "seed"] and "dropout rate" in names
    rates = next(h for h in config.hparam_infos if h.name == "dropout rate").domain_discrete.values
    assert sorted(value.number_value for value in rates) == [0.2, 0.5]
    tags = {(metric.name.group, metric.name.tag) for metric in config.metric_infos}
    assert ("", "test_accuracy") in tags and ("validation", "epoch_accuracy") in tags


def test_a_variant_no_seed_trained_gets_no_folder_and_rewriting_replaces_the_logs(logs):
    assert not (logs / "dropout" / "rate-0.2").exists()
    history, runs = tables()
    write_logs(history[history["family"] == "baseline"], runs[runs["family"] == "baseline"], VARIANTS[:1], logs)
    assert sorted(p.name for p in logs.iterdir() if p.is_dir()) == ["baseline"]


def test_hparams_are_plain_values():
    hparams = run_hparams({"family": "noise", "variant": "level-0.3", "coords": {"level": np.float64(0.3), "apply": None}}, np.int64(2))
    assert hparams == {"family": "noise", "variant": "level-0.3", "seed": 2, "level": 0.3}
    assert all(type(value) in (str, int, float, bool) for value in hparams.values())
