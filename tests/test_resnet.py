"""model.kind resnet: the built network and its layer names, its keys and their refusals, the families on it, training."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.ablations import expand_capacity, expand_units
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.data.base import DatasetInfo
from ablation_lab.identity import canonical_model, describe_model
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model
from conftest import bright_rows, deep_set

configure_tensorflow(threads=1)
IMAGES = DatasetInfo("image", (8, 8))


def resnet(**overrides) -> dict:
    return canonical_model({"kind": "resnet", "hidden_units": [128], "activation": "relu", "dropout": 0.0, **overrides})


def test_defaults_fill_the_resnet_keys_and_the_dense_head_keys_are_dropped():
    spec = resnet()
    assert spec["blocks"] == 3 and spec["filters"] == [16, 32, 32] and spec["batch_norm"] is True and spec["kernel_size"] == 3
    assert "hidden_units" not in spec and "block_widths" not in spec  # equal inner widths are the default
    assert resnet(block_widths=[16, 32, 32]) == spec
    assert describe_model(resnet(block_widths=[16, 8, 32], dropout=0.25)) == "relu-resnet-16x32x32-in16x8x32-drop0.25"


def test_resnet_keys_are_refused_by_key_where_they_do_not_apply():
    with pytest.raises(ValueError, match=r"^model.filters: 3 entries for 2 residual blocks"):
        resnet(blocks=2, filters=[4, 8, 16])
    with pytest.raises(ValueError, match=r"^model.block_widths: 1 entries for 3 residual blocks"):
        resnet(block_widths=[4])
    with pytest.raises(ValueError, match=r"^model.blocks: applies to kind resnet only \(this model is kind cnn\)"):
        canonical_model({"kind": "cnn", "hidden_units": [8], "activation": "relu", "dropout": 0.0, "blocks": 2})
    with pytest.raises(ValueError, match=r"^model.block_widths: applies to kind cnn or resnet only \(this model is kind mlp\)"):
        canonical_model({"hidden_units": [8], "activation": "relu", "dropout": 0.0, "block_widths": [2]})
    with pytest.raises(ValueError, match=r"^model.pooling: not available for kind resnet \(it downsamples with strided convs"):
        resnet(pooling="avg")
    with pytest.raises(ValueError, match=r"^model.l2: not available for kind resnet"):
        resnet(l2=0.01)


def test_the_network_is_pre_activation_with_identity_and_projection_shortcuts():
    import keras
    from ablation_lab.models.build import build_model

    model = build_model(resnet(filters=[4, 8], dropout=0.25), (8, 8), 10)
    names = [layer.name for layer in model.layers]
    block = ["norm_1", "relu_1", "conv_1", "norm_2", "relu_2", "conv_2"]
    assert names[:3] == ["features", "channels", "stem_conv"]
    assert names[3:10] == [f"block_1_{n}" for n in block] + ["block_1_add"]
    assert names[-5:] == ["head_norm", "head_relu", "pool", "head_dropout", "probabilities"]
    # block 1 keeps 4 channels: identity shortcut, the add reads the stem; block 2 widens: stride 2 and a 1x1 shortcut
    assert "block_1_shortcut" not in names and "block_3_shortcut" not in names
    assert model.get_layer("block_1_add").input[0] is model.get_layer("stem_conv").output
    shortcut = model.get_layer("block_2_shortcut")
    assert shortcut.kernel_size == (1, 1) and shortcut.strides == (2, 2) and shortcut.input is model.get_layer("block_1_add").output
    assert model.get_layer("block_2_add").output.shape[1:] == (4, 4, 8) and model.get_layer("block_3_add").output.shape[1:] == (4, 4, 8)
    assert model.get_layer("block_2_add").input[1] is model.get_layer("block_2_conv_2").output  # the block's write
    assert isinstance(model.get_layer("block_2_add"), keras.layers.Add) and model.get_layer("head_dropout").rate == 0.25
    plain = build_model(resnet(filters=[4], blocks=1, batch_norm=False, block_widths=[2]), (8, 8), 3)
    assert not [n for n in (layer.name for layer in plain.layers) if "norm" in n]
    assert plain.get_layer("block_1_conv_1").filters == 2 and plain.get_layer("block_1_conv_2").filters == 4


def test_a_learnable_activation_goes_in_every_block_and_the_head():
    from ablation_lab.models.build import build_model
    from ablation_lab.models.layers import GPActivation

    model = build_model(resnet(filters=[4], blocks=1, activation="gp"), (8, 8), 3)
    assert all(isinstance(model.get_layer(n), GPActivation) for n in ("block_1_relu_1", "block_1_relu_2", "head_relu"))


def test_capacity_and_the_units_family_on_a_resnet():
    variants = expand_capacity({"widths": [8], "depths": [1, 3]}, IMAGES, {"kind": "resnet"})
    assert [v.model for v in variants] == [
        {"blocks": 1, "filters": [8], "block_widths": None},
        {"blocks": 3, "filters": [8, 16], "block_widths": None},
    ]
    assert resnet(**variants[1].model)["filters"] == [8, 16, 16]
    units = expand_units([0.0, 0.5], {"kind": "resnet", "filters": [8, 16], "blocks": 2}, 2)
    assert [v.model for v in units] == [{"block_widths": [8, 16]}, {"block_widths": [8, 8]}]
    assert resnet(filters=[8, 16], blocks=2, **units[0].model) == resnet(filters=[8, 16], blocks=2)  # 0% is the baseline's run
    with pytest.raises(ValueError, match=r"posthoc.layers: block 3, but the residual network has 2 blocks"):
        expand_units([0.5], {"kind": "resnet", "filters": [8], "blocks": 2}, 3)


def test_a_resnet_study_narrows_the_named_blocks_inner_width_and_needs_images(test_config):
    from ablation_lab.study import Study

    model = {"kind": "resnet", "filters": [4, 8], "blocks": 2, "activation": "relu", "dropout": 0.0}
    config = deep_set(test_config, "model", model)
    config["families"], config["combinations"] = {"dropout": {"rates": [0.0, 0.5]}, "capacity": {"widths": [4], "depths": [1]}}, []
    config.pop("elasticity", None)
    config = deep_set(config, "posthoc.layers", ["block_2_relu_2"])
    families = Study.from_config(validate_config(config)).families
    assert [v.model for v in families["units"]] == [{"block_widths": [4, 8]}, {"block_widths": [4, 4]}]
    families = Study.from_config(validate_config(deep_set(config, "posthoc.layers", ["block_2", "block_1_relu_2"]))).families
    assert [v.model for v in families["units"]] == [{"block_widths": [4, 8]}, {"block_widths": [2, 8]}]  # block_2 is a write: not a width
    with pytest.raises(
        ConfigError, match=r"posthoc.layers\[0\]: 'block_3_conv_2' is not a knock-out-able layer .*block_2_conv_2, head_relu\)$"
    ):
        _ = Study.from_config(validate_config(deep_set(config, "posthoc.layers", ["block_3"]))).families
    with pytest.raises(ConfigError, match=r"posthoc.layers\[0\]: a residual network's layers are named, not numbered"):
        _ = Study.from_config(validate_config(deep_set(config, "posthoc.layers", [1]))).families
    writes_only = deep_set(config, "posthoc.layers", ["block_2"])
    assert "units" not in Study.from_config(validate_config(writes_only)).families  # left out: the gap is off, not refused
    with pytest.raises(ConfigError, match=r"posthoc.layers: the compensation gap of a residual network narrows a block's inner width"):
        _ = Study.from_config(validate_config(deep_set(writes_only, "posthoc.compensation", True))).families
    reliance = deep_set(config, "reliance", {"layers": ["block_1_relu_2"]})
    with pytest.raises(
        ConfigError, match=r"^invalid study config: reliance: needs a chain model .*; model.kind resnet branches; remove it"
    ):
        _ = Study.from_config(validate_config(reliance)).families
    with pytest.raises(ConfigError, match=r"^invalid study config: faults.clip: needs a chain model .*; model.kind resnet branches"):
        _ = Study.from_config(validate_config(deep_set(config, "faults", {"clip": True}))).families
    _ = Study.from_config(validate_config(deep_set(config, "faults", {"activation_layers": []}))).families  # weight faults serve it
    with pytest.raises(ConfigError, match=r"^invalid study config: faults.finetune: needs a chain model"):
        _ = Study.from_config(validate_config(deep_set(config, "faults", {"models": ["zero"], "finetune": {"steps": 2}}))).families
    tabular = deep_set(config, "dataset", {"name": "breast_cancer"})
    tabular.pop("posthoc")
    with pytest.raises(ConfigError, match=r"model.kind: resnet needs image data; dataset 'breast_cancer' is tabular"):
        _ = Study.from_config(validate_config(tabular)).families


def test_a_resnet_trains_and_reloads_identically(tmp_path):
    from ablation_lab.models.build import load_model

    training = {"optimizer": "adam", "learning_rate": 0.01, "epochs": 4, "batch_size": 32, "early_stopping_patience": 0, "loop": "fast"}
    trained = train_model({"model": resnet(filters=[4, 8], blocks=2), "training": training}, bright_rows(), 3, seed=1).model
    x, y = bright_rows()["x_test"], bright_rows()["y_test"]
    assert (predict_proba(trained, x).argmax(axis=1) == y).mean() > 0.6
    trained.save(tmp_path / "resnet.keras")
    np.testing.assert_array_equal(predict_proba(load_model(str(tmp_path / "resnet.keras")), x), predict_proba(trained, x))


def test_the_preset_study_knocks_out_whole_blocks_and_has_the_width_twin(root):
    from ablation_lab.config import load_config_file
    from ablation_lab.study import Study

    study = Study.from_config(load_config_file(root / "config" / "resnet.yaml"))
    assert study.config["model"]["kind"] == "resnet" and len(study.config["seeds"]) == 3
    assert study.config["posthoc"]["layers"][1:] == ["block_1", "block_2", "block_3"] and 1.0 in study.config["posthoc"]["fractions"]
    assert [v.model for v in study.families["units"]] == [{"block_widths": [8, 16, 16]}, {"block_widths": [8, 16, 8]}]
    assert {"dropout", "activation", "input", "noise", "input_posthoc", "noise_posthoc"} <= set(study.families)


def test_a_resnet_study_refuses_hidden_units_and_shows_none():

    config = validate_config({"study": "r", "dataset": {"name": "digits"}, "model": {"kind": "resnet"}})
    assert "hidden_units" not in config["model"]  # the dense models' default means nothing here
    with pytest.raises(ConfigError, match=r"model\.hidden_units: does not apply to kind resnet"):
        validate_config({"study": "r", "dataset": {"name": "digits"}, "model": {"kind": "resnet", "hidden_units": [64]}})
    for given in ([], None):  # the schema would ask for a non-empty list
        with pytest.raises(ConfigError, match=r"model\.hidden_units: does not apply to kind resnet"):
            validate_config({"study": "r", "dataset": {"name": "digits"}, "model": {"kind": "resnet", "hidden_units": given}})
