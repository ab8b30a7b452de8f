"""Bad study configs fail before any job, each with one line naming the key and what is allowed."""

from __future__ import annotations

import pytest
import yaml
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.study import Study
from conftest import ROOT, deep_set

BAD_CONFIGS = [
    # (dotted key, bad value, fragments the message must contain)
    ("dropuot", {"rates": [0.1]}, ["unknown key 'dropuot'", "allowed keys", "families"]),
    (
        "families.dropuot",
        {"rates": [0.1]},
        ["unknown key 'dropuot' in families", "allowed keys: activation, capacity, dropout, input, noise"],
    ),
    ("families.dropout.rates", [], ["families.dropout.rates", "must not be empty"]),
    ("families.dropout.rates", [0.2, 1.0], ["families.dropout.rates[1]", "1.0"]),
    ("families.dropout.rates", [-0.1], ["families.dropout.rates[0]", "-0.1"]),
    ("families.dropout.rates", [0.2, 0.2], ["families.dropout.rates", "duplicate"]),
    ("families.dropout.rates", "0.2", ["families.dropout.rates", "not of type 'array'"]),
    ("families.dropout", {"rate": [0.1]}, ["families.dropout", "'rates' is a required property"]),
    ("families.activation.functions", ["relu", "relu6"], ["families.activation.functions[1]", "'relu6'", "allowed values: relu, sigmoid"]),
    ("families.activation.functions", [], ["families.activation.functions", "must not be empty"]),
    ("families.noise.levels", [0.1, -0.2], ["families.noise.levels[1]", "-0.2"]),
    ("families.noise.levels", [1.5], ["families.noise.levels[0]", "1.5"]),
    ("families.noise.kinds", ["uniform"], ["families.noise.kinds[0]", "allowed values: gaussian, salt_pepper"]),
    ("families.noise.apply_to", ["train"], ["families.noise.apply_to[0]", "allowed values: both, test"]),
    (
        "families.input.groups",
        [{"kind": "diagonal", "size": 4}],
        ["families.input.groups[0].kind", "allowed values: columns, rows, patches, features"],
    ),
    ("families.input.groups", [{"kind": "columns", "size": 0}], ["families.input.groups[0].size", "minimum"]),
    ("families.input.fill", "blur", ["families.input.fill", "allowed values: zero, mean, noise"]),
    ("families.capacity.widths", [0], ["families.capacity.widths[0]", "minimum"]),
    ("dataset.name", "imagenet", ["dataset.name", "'imagenet'", "allowed values: mnist5k, digits"]),
    ("dataset.test_fraction", 1.0, ["dataset.test_fraction", "1.0"]),
    ("dataset.max_samples", 3, ["dataset.max_samples", "minimum"]),
    ("model.dropout", 1.0, ["model.dropout", "1.0"]),
    ("model.hidden_units", [], ["model.hidden_units", "must not be empty"]),
    ("model.activation", "softplus", ["model.activation", "allowed values"]),
    ("training.learning_rate", 0, ["training.learning_rate", "0"]),
    ("training.epochs", 0, ["training.epochs", "minimum"]),
    ("training.batch_size", "32", ["training.batch_size", "not of type 'integer'"]),
    ("training.optimizer", "adamw", ["training.optimizer", "allowed values: adam, sgd, rmsprop"]),
    ("training.loop", "custom", ["training.loop", "allowed values: fast, keras"]),
    ("seeds", [], ["seeds", "must not be empty"]),
    ("seeds", [1, 1], ["seeds", "duplicate"]),
    ("seeds", [-1], ["seeds[0]", "minimum"]),
    ("study", "My Study", ["study", "does not match"]),
    ("combinations", [["noise", "noise"]], ["combinations[0]", "duplicate"]),
    ("combinations", [["noise", "lambda x: x"]], ["combinations[0][1]", "allowed values"]),
    ("training.callbacks", ["keras.callbacks.Foo"], ["unknown key 'callbacks' in training"]),
]


@pytest.mark.parametrize(("key", "value", "fragments"), BAD_CONFIGS, ids=[f"{k}={v!r}" for k, v, _ in BAD_CONFIGS])
def test_bad_config_is_rejected_with_a_message_naming_the_key(test_config, key, value, fragments):
    bad = deep_set(test_config, key, value)
    with pytest.raises(ConfigError) as caught:
        Study.from_config(bad)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_combination_of_an_undeclared_family_is_rejected(test_config):
    del test_config["families"]["capacity"]
    test_config["combinations"] = [["capacity", "dropout"]]
    with pytest.raises(ConfigError, match=r"combinations\[0\]: family 'capacity' is crossed but not declared"):
        Study.from_config(test_config)


def test_duplicate_variant_ids_are_rejected(test_config):
    test_config["families"]["input"]["groups"] = [{"kind": "columns", "size": 14}, {"kind": "columns", "size": 14}]
    with pytest.raises(ConfigError, match=r"duplicate variant id 'input/cols-00-13'"):
        Study.from_config(test_config)


def test_image_groups_on_tabular_data_are_rejected(test_config):
    test_config["dataset"] = {"name": "breast_cancer"}
    with pytest.raises(ConfigError, match=r"families.input.groups\[0\]: kind 'columns' needs image data"):
        Study.from_config(test_config)


def test_defaults_are_filled_in():
    config = validate_config({})
    assert config["dataset"]["name"] == "mnist5k"
    assert config["model"] == {"hidden_units": [128], "activation": "relu", "dropout": 0.0}
    assert config["training"]["epochs"] == 5
    assert config["families"] == {} and config["combinations"] == []


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "full.yaml"])
def test_shipped_study_files_are_valid(name):
    with open(ROOT / "config" / name) as handle:
        study = Study.from_config(yaml.safe_load(handle))
    assert study.variants


def test_every_schema_key_is_documented_in_config_readme(root):
    readme = (root / "config" / "README.md").read_text()
    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, prefix + name + ".")
            if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
                yield from keys(sub["items"], prefix + name + "[].")

    missing = [k for k in keys(schema) if f"`{k}`" not in readme]
    assert not missing, f"config/README.md does not document {missing}"
