"""Bad study configs fail before any job, each with one line naming the key and what is allowed."""

from __future__ import annotations

import math

import pytest
import yaml
from ablation_lab.__main__ import main
from ablation_lab.config import ConfigError, load_config_file, load_study_yaml, load_yaml_text, validate_config
from ablation_lab.study import Study
from conftest import ROOT, deep_set

NAN, INF = math.nan, math.inf

BAD_CONFIGS = [
    # (dotted key, bad value, fragments the message must contain)
    ("dropuot", {"rates": [0.1]}, ["unknown key 'dropuot'", "allowed keys", "families"]),
    ("resources.gpu", 2, ["resources.gpu", "2 is greater than the maximum of 1"]),
    ("resources.gpus", 1, ["unknown key 'gpus' in resources", "allowed keys: gpu"]),
    (
        "families.dropuot",
        {"rates": [0.1]},
        ["unknown key 'dropuot' in families", "allowed keys: activation, capacity, dropout, input, labels, noise, nsdropout"],
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
    # YAML's .nan passes every minimum/maximum check, and .inf every minimum: numbers must be finite
    ("training.learning_rate", NAN, ["training.learning_rate", "nan is not a finite number"]),
    ("training.learning_rate", INF, ["training.learning_rate", "inf is not a finite number"]),
    ("model.dropout", INF, ["model.dropout", "inf is not a finite number"]),
    ("families.noise.levels", [0.1, NAN], ["families.noise.levels[1]", "nan is not a finite number"]),
    ("families.dropout.rates", [NAN], ["families.dropout.rates[0]", "nan is not a finite number"]),
    ("dataset.test_fraction", NAN, ["dataset.test_fraction", "nan is not a finite number"]),
    ("dataset.validation_fraction", -INF, ["dataset.validation_fraction", "-inf is not a finite number"]),
    ("training.epochs", INF, ["training.epochs", "inf is not a finite number"]),
    # 1.0 is a JSON-schema integer; integer keys refuse Python floats
    ("seeds", [1.0, 2.0], ["seeds[0]: 1.0 is not an integer (write 1", "seeds[1]: 2.0 is not an integer"]),
    ("dataset.split_seed", 42.0, ["dataset.split_seed: 42.0 is not an integer"]),
    ("training.epochs", 5.5, ["training.epochs: 5.5 is not an integer"]),
    ("training.batch_size", 64.0, ["training.batch_size: 64.0 is not an integer"]),
    ("training.early_stopping_patience", 3.0, ["training.early_stopping_patience: 3.0 is not an integer"]),
    ("model.hidden_units", [16.0], ["model.hidden_units[0]: 16.0 is not an integer"]),
    ("families.capacity.widths", [8.0], ["families.capacity.widths[0]: 8.0 is not an integer"]),
    ("families.capacity.depths", [2.0], ["families.capacity.depths[0]: 2.0 is not an integer"]),
    ("families.input.groups", [{"kind": "columns", "size": 14.0}], ["families.input.groups[0].size: 14.0 is not an integer"]),
    ("dataset.max_samples", 600.0, ["dataset.max_samples: 600.0 is not an integer"]),
    ("seeds", [True], ["seeds[0]", "not of type 'integer'"]),
    # caps, with the limit in the message (and only the type error when the type is wrong too)
    ("dataset.split_seed", 2**32, ["dataset.split_seed", "maximum of 4294967295"]),
    ("dataset.split_seed", 1e10, ["dataset.split_seed: 10000000000.0 is not an integer"]),
    ("seeds", list(range(101)), ["seeds: has 101 entries, more than the limit of 100"]),
    ("model.hidden_units", [16385], ["model.hidden_units[0]", "maximum of 16384"]),
    ("model.hidden_units", [8] * 17, ["model.hidden_units: has 17 entries, more than the limit of 16"]),
    ("families.capacity.widths", [20000], ["families.capacity.widths[0]", "maximum of 16384"]),
    ("families.capacity.depths", [17], ["families.capacity.depths[0]", "maximum of 16"]),
    ("training.epochs", 10001, ["training.epochs", "maximum of 10000"]),
    ("training.batch_size", 65537, ["training.batch_size", "maximum of 65536"]),
    ("training.early_stopping_patience", 10001, ["training.early_stopping_patience", "maximum of 10000"]),
    # the study name must match whole, and is short: it names a folder
    ("study", "abc\n", ["study: 'abc\\n' does not match"]),
    ("study", "", ["study: '' does not match"]),
    ("study", "a" * 65, ["study: is 65 characters long, more than the limit of 64"]),
    ("study", NAN, ["study", "not of type 'string'"]),
    # empty strings where a name or a path is expected
    ("dataset.path", "", ["dataset.path", "should be non-empty"]),
    ("dataset.label_column", "", ["dataset.label_column", "should be non-empty"]),
    ("training.learning_rate", -0.1, ["training.learning_rate", "minimum of 0"]),
    ("training.learning_rate", "1e-3", ["training.learning_rate", "YAML reads 1e-3 as text", "1.0e-3"]),
    # input group options that do not apply to the group's kind, or do not fit the image
    (
        "families.input.groups",
        [{"kind": "columns", "size": 4, "named": {"a": ["b"]}}],
        ["families.input.groups[0].named: applies only to kind 'features', not to kind 'columns'"],
    ),
    (
        "families.input.groups",
        [{"kind": "patches", "size": 4, "named": {"a": ["b"]}}],
        ["families.input.groups[0].named: applies only to kind 'features', not to kind 'patches'"],
    ),
    (
        "families.input.groups",
        [{"kind": "features", "size": 4}],
        ["families.input.groups[0].size: applies only to kinds columns, rows, patches, not to kind 'features'"],
    ),
    ("families.input.groups", [{"kind": "rows"}], ["families.input.groups[0]: kind 'rows' needs a size"]),
    (
        "families.input.groups",
        [{"kind": "columns", "size": 7}, {"kind": "columns", "size": 100}],
        ["families.input.groups[1].size: 100 is larger than the image width of 28 pixels (28 x 28 images)"],
    ),
    ("families.input.groups", [{"kind": "rows", "size": 29}], ["families.input.groups[0].size: 29 is larger than the image height of 28"]),
    ("families.input.groups", [{"kind": "patches", "size": 30}], ["families.input.groups[0].size: 30 is larger than the image height"]),
    ("families.input.groups", [{"kind": "features", "named": {}}], ["families.input.groups[0].named: must not be empty"]),
    ("families.input.groups", [{"kind": "features", "named": {1: ["x"]}}], ["families.input.groups[0].named: key 1 is not allowed"]),
    ("families.input.groups", [{"kind": "features", "named": {"a": [""]}}], ["families.input.groups[0].named.a[0]", "non-empty"]),
    ("combinations", [["noise", "dropout"], ["noise", "dropout"]], ["combinations: has duplicate entries"]),
    ("combinations", [["noise", "dropout"], ["dropout", "noise"]], ["combinations[1]: crosses the same families as combinations[0]"]),
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


def test_unknown_keys_of_mixed_types_are_listed_not_a_crash(test_config):
    # YAML 1.1 reads `on:` as the key True; sorting True with 'zz' used to raise TypeError
    test_config.update({True: 1, "zz": 2})
    with pytest.raises(ConfigError, match=r"unknown key True, 'zz' in <top level>"):
        validate_config(test_config)


def test_errors_are_ordered_by_index_numerically(test_config):
    test_config["seeds"] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.0, 2.0]
    with pytest.raises(ConfigError) as caught:
        validate_config(test_config)
    message = str(caught.value)
    assert message.index("seeds[10]") < message.index("seeds[11]")


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


# --- reading study files --------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "study.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("study: a\nseeds: [1]\nstudy: b\n", ["line 3, column 1", "duplicate key 'study' (first given at line 1, column 1)"]),
        (
            "training:\n  epochs: 5\n  batch_size: 8\n  epochs: 50\n",
            ["line 4, column 3", "duplicate key 'epochs' (first given at line 2, column 3)"],
        ),
        (
            "families: {noise: {levels: [0.1], levels: [0.2]}}\n",
            ["line 1, column 35: duplicate key 'levels' (first given at line 1, column 20)"],
        ),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_merge_keys_may_override_without_counting_as_duplicates():
    assert load_yaml_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")["other"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("families:\n  noise:\n    levels: [0.1\n  dropout: {}\n", ["line 4, column 10", "expected ',' or ']'", "flow sequence at line 3"]),
        ("study: a\n  seeds: [1]\n", ["line 2, column 8", "mapping values are not allowed here"]),
        ("study: a\n\tseeds: [1]\n", ["line 2, column 1", "cannot start any token"]),
        ("study: 'smoke\n", ["line 2, column 1", "found unexpected end of stream"]),
        ("seeds: *one\n", ["line 1, column 8", "found undefined alias 'one'"]),
        ("study: !!python/object:os.system {}\n", ["line 1, column 8", "could not determine a constructor"]),
        ("study: 2024-13-01\n", ["line 1, column 8", "cannot read '2024-13-01' as timestamp: month must be in 1..12"]),
        ("training:\n  epochs: !!int five\n", ["line 2, column 11", "cannot read 'five' as int"]),
    ],
)
def test_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"cannot read study config {path}, line ")
    for fragment in fragments:
        assert fragment in message


def test_deeply_nested_yaml_is_one_line_not_a_recursion_error():
    with pytest.raises(ConfigError, match=r"cannot read study config deep.yaml: nested too deeply"):
        load_yaml_text("seeds: " + "[" * 5000 + "]" * 5000, "deep.yaml")


def test_a_study_file_that_is_not_a_mapping_or_not_utf8_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"a study config is a mapping of keys, got list"):
        load_config_file(write(tmp_path, "- 1\n- 2\n"))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"study: \xff\n")
    with pytest.raises(ConfigError, match=r"binary.yaml: not UTF-8 text \(byte 7\)"):
        load_config_file(binary)


def test_an_empty_study_file_is_the_default_study(tmp_path):
    assert load_study_yaml(write(tmp_path, "# nothing yet\n")) == {}
    assert load_config_file(write(tmp_path, "")) == validate_config({})


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "full.yaml"])
def test_shipped_study_files_pass_the_strict_loader(name):
    assert load_study_yaml(ROOT / "config" / name) == yaml.safe_load((ROOT / "config" / name).read_text())


# --- `python -m ablation_lab check`: exit 2 and one line, never a traceback ------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "error: cannot read {path}: No such file or directory"),
        ("families:\n  noise:\n    levels: [0.1\n", "error: cannot read study config {path}, line 4, column 1"),
        ("study: a\nstudy: b\n", "error: cannot read study config {path}, line 2, column 1: duplicate key 'study'"),
        ("training: {learning_rate: .nan}\n", "error: invalid study config: training.learning_rate: nan is not a finite number"),
        (
            "dataset: {name: npz}\nfamilies:\n  input:\n    groups: [{kind: columns, size: 4}]\n",
            "error: dataset 'npz' is read from a local file and nothing is downloaded",
        ),
        (
            "dataset: {name: npz, path: broken.npz}\nfamilies:\n  input:\n    groups: [{kind: columns, size: 4}]\n",
            "error: 'broken.npz' is not a NumPy .npz archive",
        ),
    ],
    ids=["missing-file", "broken-yaml", "duplicate-key", "nan", "data-error-no-path", "data-error-bad-npz"],
)
def test_check_fails_with_one_error_line(tmp_path, monkeypatch, capsys, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"not a zip archive")
    path = tmp_path / "study.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(expected.format(path=path))


def test_check_still_raises_a_programming_error(monkeypatch, tmp_path):
    """Only user errors become one line; a bug keeps its traceback."""

    def broken(config):
        raise ValueError("a bug, not a bad config")

    monkeypatch.setattr(Study, "from_config", classmethod(lambda cls, config: broken(config)))
    with pytest.raises(ValueError, match="a bug"):
        main(["check", str(write(tmp_path, "study: a\n"))])


def test_study_files_given_together_merge_as_snakemake_merges_them():
    from ablation_lab.config import merge_studies

    first = {"study": "a", "training": {"epochs": 3, "batch_size": 64}, "families": {"dropout": {"rates": [0.5]}}}
    second = {"study": "b", "training": {"epochs": 5}, "families": {"noise": {"levels": [0.1]}}}
    merged = merge_studies([first, second])
    assert merged == {
        "study": "b",
        "training": {"epochs": 5, "batch_size": 64},
        "families": {"dropout": {"rates": [0.5]}, "noise": {"levels": [0.1]}},
    }
    merged["training"]["epochs"] = 1
    assert second["training"]["epochs"] == 5  # the inputs are not changed
