"""model.kind cnn: the built network, families on it, refusals by key, training, reload, knockout of its dense head."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.ablations import expand_capacity
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.data.base import DatasetInfo
from ablation_lab.identity import canonical_model
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model
from conftest import bright_rows, deep_set

configure_tensorflow(threads=1)
IMAGES = DatasetInfo("image", (8, 8))


def cnn(**overrides) -> dict:
    return canonical_model({"kind": "cnn", "hidden_units": [16], "activation": "relu", "dropout": 0.0, **overrides})


def test_defaults_fill_the_cnn_keys_and_other_kinds_refuse_them():
    assert cnn()["filters"] == [16, 32] and cnn()["pooling"] == "max" and cnn()["batch_norm"] is False
    with pytest.raises(ValueError, match=r"model.filters: applies to kind cnn or resnet only \(this model is kind mlp\)"):
        canonical_model({"hidden_units": [8], "activation": "relu", "dropout": 0.0, "filters": [8]})
    with pytest.raises(ValueError, match=r"model.dropout_kind: not available for kind cnn"):
        cnn(dropout=0.2, dropout_kind="nsdropout")


def test_the_network_has_conv_blocks_then_the_dense_head():
    from ablation_lab.models.build import build_model

    model = build_model(cnn(filters=[4, 8], batch_norm=True, dropout=0.25), (8, 8), 10)
    names = [layer.name for layer in model.layers]
    assert names[:8] == ["features", "channels", "conv_1", "norm_1", "conv_act_1", "pool_1", "conv_dropout_1", "conv_2"]
    assert "hidden_1" in names and names[-1] == "probabilities"
    assert model.get_layer("pool_2").output.shape[1:] == (2, 2, 8)
    assert model.get_layer("conv_dropout_1").rate == 0.25 and model.get_layer("dropout_1").rate == 0.25
    assert model.output.shape[-1] == 10


def test_capacity_on_a_cnn_sweeps_conv_depth_and_width():
    variants = expand_capacity({"widths": [8], "depths": [1, 3]}, IMAGES, {"kind": "cnn"})
    assert [v.model for v in variants] == [{"filters": [8]}, {"filters": [8, 16, 32]}]
    assert expand_capacity({"widths": [8], "depths": [2]}, IMAGES, {})[0].model == {"hidden_units": [8, 8]}


def test_a_cnn_on_tabular_data_is_refused_by_key(test_config):
    from ablation_lab.study import Study

    config = deep_set(test_config, "dataset", {"name": "breast_cancer"})
    config = deep_set(config, "model", {"kind": "cnn", "hidden_units": [8], "activation": "relu", "dropout": 0.0})
    config["families"], config["combinations"] = {"dropout": {"rates": [0.0, 0.5]}}, []
    config.pop("posthoc", None)
    config.pop("elasticity", None)
    with pytest.raises(ConfigError, match=r"model.kind: cnn needs image data; dataset 'breast_cancer' is tabular"):
        _ = Study.from_config(validate_config(config)).families


def _cnn_study(test_config: dict, layers: list) -> dict:
    config = deep_set(test_config, "model", {"kind": "cnn", "filters": [4, 8], "hidden_units": [8], "activation": "relu", "dropout": 0.0})
    config["families"], config["combinations"] = {"dropout": {"rates": [0.0, 0.5]}}, []
    config.pop("elasticity", None)
    return deep_set(config, "posthoc.layers", layers)


def test_posthoc_layers_name_conv_blocks_and_unknown_names_are_refused_at_parse_time(test_config):
    from ablation_lab.study import Study

    families = Study.from_config(validate_config(_cnn_study(test_config, ["conv_act_2", "hidden_1"]))).families
    assert [v.model["hidden_units"] for v in families["units"]] == [[8], [4]]  # the units family narrows hidden_1
    with pytest.raises(
        ConfigError,
        match=r"^invalid study config: posthoc.layers\[1\]: 'conv_act_3' is not a knock-out-able layer of this model "
        r"\(available: conv_act_1, conv_act_2, hidden_1\)$",
    ):
        _ = Study.from_config(validate_config(_cnn_study(test_config, [1, "conv_act_3"]))).families
    conv_only = _cnn_study(test_config, ["conv_act_1"])
    assert "units" not in Study.from_config(validate_config(conv_only)).families  # the default leaves the gap out
    with pytest.raises(ConfigError, match=r"posthoc.layers: the compensation gap narrows a hidden layer .* names none"):
        _ = Study.from_config(validate_config(deep_set(conv_only, "posthoc.compensation", True))).families
    with pytest.raises(ConfigError, match=r"posthoc.layers"):
        validate_config(_cnn_study(test_config, ["conv act; rm"]))


@pytest.fixture(scope="module")
def trained():
    spec = {
        "model": cnn(filters=[4, 8], activation="relu"),
        "training": {
            "optimizer": "adam",
            "learning_rate": 0.01,
            "epochs": 4,
            "batch_size": 32,
            "early_stopping_patience": 0,
            "loop": "fast",
        },
    }
    return train_model(spec, bright_rows(), 3, seed=1).model


def test_the_fast_loop_trains_a_cnn_that_reloads_identically(trained, tmp_path):
    from ablation_lab.models.build import load_model

    x, y = bright_rows()["x_test"], bright_rows()["y_test"]
    assert (predict_proba(trained, x).argmax(axis=1) == y).mean() > 0.6
    trained.save(tmp_path / "cnn.keras")
    np.testing.assert_array_equal(predict_proba(load_model(str(tmp_path / "cnn.keras")), x), predict_proba(trained, x))


def test_knockout_removes_units_of_the_cnns_dense_head(trained):
    from ablation_lab.models import surgery

    assert surgery.hidden_layers(trained) == ["hidden_1"]
    assert surgery.knockout_layers(trained) == ["conv_act_1", "conv_act_2", "hidden_1"]
    split = surgery.split_model(trained, "hidden_1")
    x = bright_rows()["x_test"]
    keep_all = surgery.masked_predictions(split, split.head(x), np.ones((1, 16), dtype=bool), np.zeros(16, np.float32))
    np.testing.assert_array_equal(keep_all[0], predict_proba(trained, x).argmax(axis=1))


def test_a_learnable_activation_goes_in_every_conv_block():
    from ablation_lab.models.build import build_model
    from ablation_lab.models.layers import GPActivation

    model = build_model(cnn(filters=[4], activation="gp"), (8, 8), 3)
    assert isinstance(model.get_layer("conv_act_1"), GPActivation) and isinstance(model.get_layer("hidden_1"), GPActivation)


def test_the_elasticity_section_says_when_no_model_was_analysed():
    import pandas as pd
    from ablation_lab.analyses.elasticity import elasticity_section
    from ablation_lab.report.sections import ReportInputs

    empty = pd.DataFrame(columns=["family", "variant", "seed", "metric", "example", "value"])
    (section,) = elasticity_section(ReportInputs(study={"model": {"kind": "cnn"}}, meta={}, tables={"elasticity": empty}))
    assert "Not analysed: no model gave elasticity rows" in section.blocks[0]["text"]
