"""Reliance on single directions (issue 30): label noise, class selectivity, the rotation control, the study summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.ablations import FAMILIES, apply_transforms, corrupt_labels, training_labels, transform_split
from ablation_lab.analyses import reliance
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.analyses.reliance import RelianceParams
from ablation_lab.analyses.reliance_report import FIGURES
from ablation_lab.data.base import DatasetInfo
from ablation_lab.identity import describe_transform, is_noop
from ablation_lab.models import surgery
from ablation_lab.statistics.intervals import spearman_interval
from ablation_lab.training.train import configure_tensorflow

# --- the labels family ----------------------------------------------------------------------


def arrays(n_classes: int = 10, per_class: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for split, scale in (("train", 4), ("val", 1), ("test", 1)):
        y = np.repeat(np.arange(n_classes), per_class * scale // 4 or 1).astype(np.int32)
        out[f"y_{split}"] = rng.permutation(y)
        out[f"x_{split}"] = rng.random((len(y), 6), dtype=np.float32)
    return out


def test_the_labels_family_names_its_variants_and_corrupts_only_training_labels():
    variants = FAMILIES["labels"].expand({"rates": [0.0, 0.2]}, DatasetInfo("image", (6,)))
    assert [v.id for v in variants] == ["labels/noise-0", "labels/noise-0.2"]
    transform = variants[1].transforms[0]
    assert describe_transform(transform) == "labels0.2" and not is_noop(transform) and is_noop(variants[0].transforms[0])
    data = arrays()
    out = apply_transforms(data, variants[1].transforms, seed=3, n_classes=10)
    for split in ("val", "test"):
        assert np.array_equal(out[f"y_{split}"], data[f"y_{split}"])
    for split in ("train", "val", "test"):
        assert np.array_equal(out[f"x_{split}"], data[f"x_{split}"])
        assert np.array_equal(transform_split(data[f"x_{split}"], split, [transform], 3, {}), data[f"x_{split}"])
    changed = out["y_train"] != data["y_train"]
    assert changed.sum() == round(0.2 * len(changed))


def test_corruption_moves_labels_to_another_class_keeps_counts_plausible_and_is_seeded():
    y = np.repeat(np.arange(10), 400).astype(np.int32)
    rng = np.random.default_rng(np.random.SeedSequence([1]))
    noisy = corrupt_labels(y, 0.5, 10, rng)
    changed = noisy != y
    assert changed.sum() == 2000  # exactly round(rate x n), each to a different class
    counts = np.bincount(noisy, minlength=10)
    assert counts.min() > 300 and counts.max() < 500  # uniform to the other classes: each class keeps about its share
    assert np.array_equal(
        training_labels(y, [{"op": "corrupt_labels", "rate": 0.5}], 7, 10),
        training_labels(y, [{"op": "corrupt_labels", "rate": 0.5}], 7, 10),
    )
    assert not np.array_equal(
        training_labels(y, [{"op": "corrupt_labels", "rate": 0.5}], 7, 10),
        training_labels(y, [{"op": "corrupt_labels", "rate": 0.5}], 8, 10),
    )
    assert np.array_equal(training_labels(y, [{"op": "corrupt_labels", "rate": 0.0}], 7, 10), y)


# --- selectivity and directions -------------------------------------------------------------


def test_selectivity_is_one_for_a_one_class_unit_and_zero_for_a_uniform_unit():
    labels = np.repeat(np.arange(4), 5)
    one_class = (labels == 2).astype(np.float32) * 3.0
    uniform = np.full(len(labels), 0.7, np.float32)
    silent = np.zeros(len(labels), np.float32)
    selectivity, preferred = surgery.class_selectivity(np.stack([one_class, uniform, silent], axis=1), labels, 4)
    np.testing.assert_allclose(selectivity, [1.0, 0.0, 0.0], atol=1e-12)
    assert preferred[0] == 2
    # a channel's selectivity is of its mean over positions
    maps = np.broadcast_to(np.stack([one_class, uniform], axis=1)[:, None, None, :], (len(labels), 3, 3, 2))
    np.testing.assert_allclose(surgery.class_selectivity(maps, labels, 4)[0], [1.0, 0.0], atol=1e-12)


def test_a_random_rotation_is_orthogonal_and_preserves_activation_norms():
    rotation = surgery.random_rotation(16, np.random.default_rng(0))
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(16), atol=1e-5)
    activations = np.random.default_rng(1).random((50, 16)).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(activations @ rotation, axis=1), np.linalg.norm(activations, axis=1), rtol=1e-5)
    assert not np.allclose(rotation, surgery.random_rotation(16, np.random.default_rng(2)))


@pytest.fixture(scope="module")
def model_and_data():
    import keras
    from ablation_lab.models.build import build_mlp

    configure_tensorflow(threads=1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = {split: rng.random((n, 12)).astype(np.float32) for split, n in (("train", 120), ("val", 60), ("test", 80))}
    labels = {split: rng.integers(0, 3, size=len(x)).astype(np.int32) for split, x in data.items()}
    return build_mlp((12,), 3, [16, 8], "relu", 0.0), data, labels


def test_removing_every_direction_equals_a_full_knockout_and_none_changes_nothing(model_and_data):
    model, data, _ = model_and_data
    split = surgery.split_model(model, "hidden_1")
    activations = split.head(data["test"])
    rotation = surgery.random_rotation(activations.shape[1], np.random.default_rng(0))
    keep = np.array([np.zeros(16, bool), np.ones(16, bool)])
    zero = np.zeros(16, np.float32)
    by_direction = surgery.masked_predictions(split, activations, keep, zero, rotation)
    by_unit = surgery.masked_predictions(split, activations, keep, zero)
    assert np.array_equal(by_direction, by_unit)
    assert np.array_equal(by_direction[1], split.tail(activations).argmax(axis=1))


def test_the_reliance_table_of_a_model_has_gap_curves_and_units(model_and_data):
    model, data, labels = model_and_data
    params = {"layers": [], "split": "test", "fractions": [0.0, 0.5, 1.0], "draws": 2, "rotation": True, "seed": 0}
    table = reliance.reliance_table(model, data, labels, ["a", "b", "c"], RelianceParams.of(params), seed=1)
    again = reliance.reliance_table(model, data, labels, ["a", "b", "c"], RelianceParams.of(params), seed=1)
    pd.testing.assert_frame_equal(table, again)  # same model and seed: same numbers
    run = table[table["layer"] == ""].set_index("metric")["value"]
    assert run["generalisation_gap"] == pytest.approx(run["train_accuracy"] - run["test_accuracy"])
    areas = table[table["metric"] == "area"]
    assert set(areas["layer"]) == {"hidden_1", "hidden_2"} and set(areas["basis"]) == {"unit", "direction"}
    assert len(table[(table["metric"] == "selectivity")]) == 16 + 8
    at_zero = table[(table["metric"] == "accuracy") & (table["fraction"] == 0.0)]["value"]
    assert np.allclose(at_zero, run["test_accuracy"])  # nothing removed: the model's own accuracy, in either basis
    normalised = table[table["metric"] == "area_normalised"]["value"].to_numpy()
    np.testing.assert_allclose(normalised, areas["value"].to_numpy() / run["test_accuracy"], rtol=1e-6)
    on_train = reliance.reliance_table(model, data, labels, ["a", "b", "c"], RelianceParams.of(params | {"split": "train"}), seed=1)
    at_zero = on_train[(on_train["metric"] == "accuracy") & (on_train["fraction"] == 0.0)]["value"]
    assert np.allclose(at_zero, run["train_accuracy"])


# --- the study level ------------------------------------------------------------------------


def test_spearman_interval_resamples_clusters_and_covers_a_strong_correlation():
    rng = np.random.default_rng(0)
    x = np.repeat(np.arange(8.0), 3) + rng.normal(0, 0.1, 24)
    found = spearman_interval(x, -x, np.repeat(np.arange(8), 3), np.tile([1, 2, 3], 8), n_boot=300)
    assert found["estimate"] == pytest.approx(-1.0) and found["high"] <= -0.9 and found["clusters"] == 8
    lone = spearman_interval(x[:3], x[:3], [0, 0, 0])
    assert np.isnan(lone["low"])


def synthetic_table() -> tuple[pd.DataFrame, list[dict]]:
    """A joined reliance table: area falls with label noise, selectivity unrelated to importance."""
    rng = np.random.default_rng(0)
    rows, variants = [], []
    for noise in (0.0, 0.2, 0.4, 0.6, 0.8):
        name = f"noise-{noise:g}"
        variants.append({"family": "labels", "variant": name, "transforms": [{"op": "corrupt_labels", "rate": noise}], "coords": {}})
        for seed in (1, 2, 3):
            base = {"family": "labels", "variant": name, "seed": seed, "run": f"r{noise}", "draw": 0, "fraction": np.nan}
            rows.append({**base, "layer": np.nan, "basis": np.nan, "unit": np.nan, "metric": "generalisation_gap", "value": noise})
            for basis in ("unit", "direction"):
                area = 0.9 - 0.5 * noise + rng.normal(0, 0.01)
                rows.append({**base, "layer": "hidden_1", "basis": basis, "unit": np.nan, "metric": "area", "value": area})
            for unit in range(6):
                cell = {**base, "layer": "hidden_1", "basis": "unit", "unit": unit}
                rows.append({**cell, "metric": "selectivity", "value": rng.random()})
                rows.append({**cell, "metric": "importance", "value": rng.random()})
                rows.append({**cell, "metric": "preferred_class", "value": float(unit % 2)})
                rows.append({**cell, "metric": "class_drop:a", "value": rng.random()})
    return pd.DataFrame(rows), variants


def test_the_summary_finds_the_negative_area_gap_correlation_and_tests_the_rotation_by_equivalence():
    from ablation_lab.analyses.base import StudyTables

    table, variants = synthetic_table()
    params = {"bootstrap": 300, "seed": 0, "correlation_margin": 0.2, "area_margin": 0.05}
    out = reliance.ANALYSIS.summarise(StudyTables(table, {}, pd.DataFrame(), {}, variants, params))
    correlations = out["reliance_correlations"].set_index(["test", "scope"])
    area = correlations.loc[("area vs gap", "all families")]
    assert area["estimate"] < -0.9 and area["high"] < 0 and area["verdict"] == "different"
    assert ("selectivity vs importance", "all units") in correlations.index
    pooled = out["reliance_rotation"].query("model.str.startswith('all models')", engine="python").iloc[0]
    assert pooled["verdict"] in ("equivalent", "different, within margin")  # "no difference" only from an equivalence test
    assert set(out["reliance_models"]["label_noise"]) == {0.0, 0.2, 0.4, 0.6, 0.8}


# --- config and orderings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("reliance.split", "valid", "reliance.split"),
        ("reliance.families", ["labls"], "reliance.families[0]"),
        ("reliance.layers", ["hiden_1"], "reliance.layers[0]: 'hiden_1' is not a knock-out-able layer"),
        ("reliance.layers", [3], "reliance.layers[0]: layer 3, but the model has 1 hidden layers"),
        ("families.labels.rates", [1.5], "families.labels.rates"),
        ("training.keep_best", "first", "training.keep_best"),
    ],
)
def test_bad_reliance_config_is_one_line_naming_the_key(test_config, key, value, fragment):
    from ablation_lab.config import ConfigError
    from ablation_lab.study import Study
    from conftest import deep_set

    config = deep_set(test_config, "reliance", {})
    with pytest.raises(ConfigError) as caught:
        Study.from_config(deep_set(config, key, value))
    assert "\n" not in str(caught.value) and fragment in str(caught.value)


def test_the_preset_and_the_default_study_plan_what_they_should():
    from ablation_lab.config import load_config_file
    from ablation_lab.study import Study
    from conftest import ROOT

    preset = Study.from_config(load_config_file(ROOT / "config" / "reliance.yaml"))
    assert "reliance" in preset.analyses() and {"labels", "dropout"} <= set(preset.families)
    assert preset.run_of(preset.variants["labels/noise-0"]) == preset.run_of(preset.variants["baseline/reference"])
    assert "reliance" not in Study.from_config(load_config_file(ROOT / "config" / "config.yaml")).analyses()


def test_selectivity_orderings_remove_the_most_or_least_selective_units_first():
    from ablation_lab.analyses.knockout import ORDERINGS, unit_order

    scores = {"magnitude": np.zeros(4), "selectivity": np.array([0.2, 0.9, 0.1, 0.5])}
    assert {"selectivity_highest", "selectivity_lowest"} <= set(ORDERINGS)
    assert list(unit_order("selectivity_highest", np.random.default_rng(0), scores)) == [1, 3, 0, 2]
    assert list(unit_order("selectivity_lowest", np.random.default_rng(0), scores)) == [2, 0, 3, 1]


def test_the_knockout_table_takes_the_selectivity_orderings(model_and_data):
    from ablation_lab.analyses.knockout import knockout_table

    model, data, labels = model_and_data
    params = {
        "layers": [1],
        "fractions": [0.0, 0.5],
        "orderings": ["selectivity_highest", "selectivity_lowest"],
        "fills": ["zero"],
        "draws": 1,
    }
    table = knockout_table(model, data, labels, ["a", "b", "c"], KnockoutParams.of(params), seed=0)
    assert set(table.loc[table["metric"] == "area", "ordering"]) == {"selectivity_highest", "selectivity_lowest"}


@pytest.mark.workflow
def test_a_tiny_reliance_study_runs_end_to_end_and_reports_its_verdicts(tmp_path):
    """The preset's shape on 600 digits: tables, figures and the report's section (about a minute on 2 cores)."""
    import yaml
    from conftest import ROOT
    from workflow_helpers import snakemake, write_config

    config = yaml.safe_load((ROOT / "config" / "reliance.yaml").read_text())
    config |= {"study": "tiny_reliance", "seeds": [1, 2]}
    config["dataset"]["max_samples"] = 600
    config["model"]["hidden_units"] = [16, 16]
    config["training"]["epochs"] = 3
    config["families"] = {"labels": {"rates": [0.0, 0.5]}, "dropout": {"rates": [0.2]}}
    config["reliance"] |= {"fractions": [0.0, 0.5, 0.9], "draws": 1, "bootstrap": 100}
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    tables = tmp_path / "reports" / "tiny_reliance" / "tables"
    correlations = pd.read_csv(tables / "reliance_correlations.csv")
    assert {"area vs gap", "selectivity vs importance"} <= set(correlations["test"])
    assert set(pd.read_csv(tables / "reliance_models.csv")["label_noise"]) == {0.0, 0.5}
    for figure in FIGURES:
        assert (tmp_path / "reports" / "tiny_reliance" / "figures" / f"{figure.replace('_', '-')}.png").stat().st_size > 0
    page = (tmp_path / "reports" / "tiny_reliance" / "report.html").read_text()
    assert "Does the network rely on single units?" in page and "Rotation control" in page


def test_the_dropout_table_finds_how_far_dropout_protected_by_equivalence():
    from ablation_lab.analyses.reliance_report import dropout_sentences

    rows = []
    for seed, wobble in ((1, 0.0), (2, 0.002), (3, -0.002)):
        for fraction, accuracy in ((0.0, 1.0), (0.1, 1.0 - wobble), (0.2, 0.999 + wobble), (0.3, 0.8 + 5 * wobble), (0.4, 0.6)):
            cell = {"family": "dropout", "variant": "rate-0.2", "seed": seed, "run": "d", "layer": "hidden_1", "basis": "unit"}
            rows.append({**cell, "draw": 0, "fraction": fraction, "unit": np.nan, "metric": "accuracy", "value": accuracy})
    table = pd.DataFrame(rows)
    models = pd.DataFrame({"family": ["dropout"], "variant": ["rate-0.2"], "dropout": [0.2]})
    found = reliance.dropout_table(table, models, RelianceParams.of({"area_margin": 0.01}))
    assert list(found["fraction"]) == [0.1, 0.2, 0.3, 0.4]
    assert list(found["verdict"][:2]) == ["equivalent", "equivalent"] and found["verdict"].iloc[2] != "equivalent"
    (sentence,) = dropout_sentences(found)
    assert "up to a fraction of 0.2 removed" in sentence and "held here" in sentence


def test_a_study_summary_without_rows_or_rotation_writes_readable_tables(tmp_path):
    from ablation_lab.analyses.base import StudyTables

    empty = reliance.ANALYSIS.summarise(StudyTables(None, {}, pd.DataFrame(), {}, [], {}))
    table, variants = synthetic_table()
    table = table[table["basis"] != "direction"]
    params = {"bootstrap": 100, "seed": 0, "correlation_margin": 0.2, "area_margin": 0.05}
    without_rotation = reliance.ANALYSIS.summarise(StudyTables(table, {}, pd.DataFrame(), {}, variants, params))
    for name, frame in [*empty.items(), ("rotation", without_rotation["reliance_rotation"])]:
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        assert list(pd.read_csv(tmp_path / f"{name}.csv").columns) == list(frame.columns)  # the report reads every table back
