"""`model.kind: file` (a researcher's own .keras model) and `model.kind: builder`: checks, identity, rebuilding."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from ablation_lab.analyses.elasticity import ElasticityParams
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.config import ConfigError
from ablation_lab.training.train import configure_tensorflow, predict_proba

configure_tensorflow(1)

DIGITS = (8, 8)


def save(model, path: Path) -> Path:
    model.save(path)
    return path


def mlp_file(path: Path, *, shape=DIGITS, classes: int = 10, output_activation: str = "softmax", dropout: float | None = 0.1) -> Path:
    """A tiny Sequential MLP, as a researcher would save it."""
    import keras
    from keras import layers

    stack = [keras.Input(shape), layers.Flatten(name="flat"), layers.Dense(12, activation="relu", name="dense_a")]
    if dropout is not None:
        stack.append(layers.Dropout(dropout, name="drop_a"))
    stack.append(layers.Dense(classes, activation=output_activation, name="out"))
    return save(keras.Sequential(stack), path)


def cnn_file(path: Path) -> Path:
    """A tiny functional CNN on 8 x 8 grey images."""
    import keras
    from keras import layers

    inputs = keras.Input(DIGITS)
    x = layers.Reshape((*DIGITS, 1), name="channels")(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(x)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(10, name="logits")(x)
    outputs = layers.Activation("softmax", name="probs")(x)
    return save(keras.Model(inputs, outputs), path)


def study_config(path: Path, families: dict | None = None, **model) -> dict:
    return {
        "study": "own",
        "seeds": [1],
        "dataset": {"name": "digits"},
        "model": {"kind": "file", "path": str(path), **model},
        "training": {"epochs": 1},
        "families": families if families is not None else {"dropout": {"rates": [0.0, 0.3]}, "activation": {"functions": ["relu", "tanh"]}},
    }


def study(config: dict):
    from ablation_lab.study import Study

    return Study.from_config(config)


def test_the_file_is_read_without_tensorflow_and_its_layers_named(tmp_path):
    from ablation_lab.models.model_file import inspect_model_file

    found = inspect_model_file(mlp_file(tmp_path / "net.keras"))
    assert found.input_shape == DIGITS
    assert found.activation_layers() == ["dense_a"]
    assert found.dropout_layers() == ["drop_a"]
    assert (found.output, found.output_units(), found.output_activation()) == ("out", 10, "softmax")
    cnn = inspect_model_file(cnn_file(tmp_path / "cnn.keras"))
    assert cnn.activation_layers() == ["conv_a"]  # the logits layer feeding the softmax is the output, not swapped
    assert (cnn.output, cnn.output_units(), cnn.output_activation()) == ("probs", 10, "softmax")


def test_variants_that_change_nothing_share_the_files_own_run(tmp_path):
    config = study_config(mlp_file(tmp_path / "net.keras", dropout=0.3), weights="as_saved")
    found = study(config)
    runs = {variant: found.run_spec(found.variants[variant])["model"] for variant in found.variants}
    assert runs["activation/relu"] == runs["baseline/reference"]  # the file's hidden activation is relu already
    assert runs["dropout/rate-0.3"] == runs["baseline/reference"]  # and its Dropout rate is 0.3
    assert runs["baseline/reference"]["weights"] == "as_saved"
    assert runs["activation/tanh"]["weights"] == "retrain"  # any change is trained
    assert runs["dropout/rate-0"]["dropout"] == 0
    longer = study({**config, "training": {"epochs": 7}})  # the saved weights are not trained: same run
    assert longer.run_of(longer.variants["baseline/reference"]) == found.run_of(found.variants["baseline/reference"])
    assert longer.run_of(longer.variants["activation/tanh"]) != found.run_of(found.variants["activation/tanh"])
    noisy = study({**config, "families": {"noise": {"levels": [0.3], "apply_to": ["both", "test"]}}})
    assert noisy.run_spec(noisy.variants["noise/gauss-0.3"])["model"]["weights"] == "retrain"  # trained on other inputs
    assert noisy.run_spec(noisy.variants["noise/gauss-0.3-testonly"])["model"]["weights"] == "as_saved"
    assert found.run_of(found.variants["baseline/reference"]).startswith("file-net-saved-")


def test_editing_the_file_gives_its_runs_a_new_identity(tmp_path):
    path = mlp_file(tmp_path / "net.keras")
    before = study(study_config(path)).runs
    mlp_file(path, dropout=0.25)
    assert set(study(study_config(path)).runs).isdisjoint(before)


def bad_file(kind: str, tmp_path: Path) -> Path:
    import keras
    from keras import layers

    path = tmp_path / "bad.keras"
    if kind == "text":
        path.write_text("not a model")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights.h5", b"")
    elif kind == "lambda":
        inputs = keras.Input(DIGITS)
        x = layers.Flatten()(inputs)
        x = layers.Lambda(lambda t: t * 2, name="doubler")(x)
        save(keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), path)
    elif kind == "shape":
        save(keras.Sequential([keras.Input((5,)), layers.Dense(10, activation="softmax")]), path)
    elif kind == "classes":
        mlp_file(path, classes=3)
    elif kind == "logits":
        mlp_file(path, output_activation="linear")
    elif kind == "two_outputs":
        inputs = keras.Input(DIGITS)
        flat = layers.Flatten()(inputs)
        save(keras.Model(inputs, [layers.Dense(10, activation="softmax")(flat), layers.Dense(2)(flat)]), path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "not a Keras model file"),
        ("zip", "not a Keras model file (a .keras archive holds config.json"),
        ("lambda", "layer 'doubler' is a Lambda layer (Python code); safe mode refuses to load Python code from a file"),
        ("shape", "the model takes inputs of shape [5], the dataset's inputs have shape [8, 8]"),
        ("classes", "output layer 'out' gives 3 probabilities; the dataset has 10 classes (expected 10)"),
        ("logits", "output layer 'out' has activation 'linear'; the model must output one probability per class"),
        ("two_outputs", "the model must have one input and one output (inputs: 1, outputs: 2)"),
    ],
)
def test_a_bad_model_file_is_one_line_naming_the_file(tmp_path, kind, message):
    path = bad_file(kind, tmp_path)
    with pytest.raises(ConfigError) as error:
        study(study_config(path, families={}))
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize(
    ("families", "model", "message"),
    [
        (
            {"activation": {"functions": ["tanh"]}},
            {},
            "families.activation: model.path: '{path}' has no hidden layer with an activation to swap",
        ),
        (
            {"dropout": {"rates": [0.2]}},
            {},
            "families.dropout: model.path: '{path}' has no Dropout layer; name the layers to follow with one in model.dropout_after",
        ),
        ({}, {"dropout_after": ["nope"]}, "model.dropout_after[0]: 'nope' is not a hidden layer of '{path}' (its hidden layers: flat)"),
        ({"capacity": {"widths": [4], "depths": [1]}}, {}, "families.capacity: does not apply to model.kind: file"),
        ({"nsdropout": {"rates": [0.5]}}, {}, "families.nsdropout: does not apply to model.kind: file"),
    ],
)
def test_a_family_that_cannot_apply_to_the_file_is_named(tmp_path, families, model, message):
    import keras
    from keras import layers

    path = save(keras.Sequential([keras.Input(DIGITS), layers.Flatten(name="flat"), layers.Dense(10, activation="softmax", name="out")]), tmp_path / "linear.keras")  # fmt: skip
    with pytest.raises(ConfigError, match=None) as error:
        study(study_config(path, families=families, **model))
    assert message.format(path=path) in str(error.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"kind": "file", "path": "m.keras", "hidden_units": [8]}, "model.hidden_units: does not apply to kind file"),
        ({"kind": "file"}, "model.path: kind file needs the path of a .keras file"),
        ({"path": "x.keras"}, "model.path: applies to kind file only (this model is kind mlp)"),
        ({"kind": "cnn", "weights": "as_saved"}, "model.weights: applies to kind file only (this model is kind cnn)"),
        ({"kind": "file", "path": "m.h5"}, "model.path"),
        ({"kind": "builder"}, "model.builder: kind builder needs the name of a builder file"),
        ({"kind": "builder", "builder": "nope"}, "model.builder: 'nope' is not a builder of this repository (known: mlp_batchnorm)"),
    ],
)
def test_model_keys_that_do_not_fit_the_kind_are_refused_by_key(model, message):
    config = {"study": "own", "seeds": [1], "dataset": {"name": "digits"}, "model": model, "families": {}}
    with pytest.raises(ConfigError) as error:
        study(config)
    assert message in str(error.value)


def test_compensation_needs_retrained_widths_and_is_refused_for_a_file(tmp_path):
    config = study_config(mlp_file(tmp_path / "net.keras"), families={})
    config["posthoc"] = {"compensation": True}
    with pytest.raises(ConfigError, match=r"posthoc\.compensation: needs width-reduced retrains"):
        study(config)
    config["posthoc"] = {}  # the default: the gap where it applies, so here knockout alone
    left_out = study(config)
    assert left_out.config["posthoc"]["compensation"] is False and "units" not in left_out.families
    assert left_out.compensation_off.startswith("posthoc.compensation: needs width-reduced retrains")


def built(path: Path, **model):
    from ablation_lab.identity import canonical_model
    from ablation_lab.models.build import build_model

    spec = canonical_model({"kind": "file", "path": str(path), **model})
    return build_model(spec, DIGITS, 10), spec


def test_retrain_clones_the_architecture_with_fresh_seeded_weights(tmp_path):
    import keras
    from ablation_lab.training.train import seed_everything

    path = mlp_file(tmp_path / "net.keras")
    saved = keras.saving.load_model(path, safe_mode=True)
    seed_everything(1)
    first, _ = built(path)
    seed_everything(1)
    second, _ = built(path)
    assert [layer.name for layer in first.layers[1:]] == [layer.name for layer in saved.layers]
    assert not np.array_equal(first.get_layer("dense_a").kernel, saved.get_layer("dense_a").kernel)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))


def test_as_saved_keeps_the_files_trained_weights(tmp_path):
    import keras

    path = mlp_file(tmp_path / "net.keras")
    model, spec = built(path, weights="as_saved")
    saved = keras.saving.load_model(path, safe_mode=True)
    assert spec["weights"] == "as_saved"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved.get_weights(), strict=True))


def test_variants_swap_activations_change_rates_and_insert_dropout(tmp_path):
    from ablation_lab.models.layers import GPActivation

    path = mlp_file(tmp_path / "net.keras")
    tanh, _ = built(path, activation="tanh", dropout=0.4)
    assert tanh.get_layer("dense_a").activation.__name__ == "tanh"
    assert tanh.get_layer("out").activation.__name__ == "softmax"
    assert tanh.get_layer("drop_a").rate == pytest.approx(0.4)
    inserted, spec = built(mlp_file(tmp_path / "plain.keras", dropout=None), dropout=0.3, dropout_after=["dense_a"])
    assert spec["dropout_after"] == ["dense_a"]
    assert inserted.get_layer("dense_a_dropout").rate == pytest.approx(0.3)
    cnn, spec = built(cnn_file(tmp_path / "cnn.keras"), activation="gp")
    assert spec["learnable"]["control_points"] == 21  # the learnable settings are part of the run
    assert isinstance(cnn.get_layer("conv_a_gp"), GPActivation)
    assert cnn.get_layer("conv_a").activation.__name__ == "linear"


def test_a_file_model_trains_and_as_saved_trains_nothing(tmp_path):
    from ablation_lab.identity import canonical_model
    from ablation_lab.training.train import predict_proba, train_model

    rng = np.random.default_rng(0)
    arrays = {f"x_{s}": rng.random((40, *DIGITS), dtype=np.float32) for s in ("train", "val", "test")}
    arrays |= {f"y_{s}": rng.integers(0, 10, 40).astype(np.int32) for s in ("train", "val", "test")}
    training = {"optimizer": "adam", "learning_rate": 0.01, "epochs": 2, "batch_size": 16, "early_stopping_patience": 0, "loop": "fast"}
    path = cnn_file(tmp_path / "cnn.keras")
    retrained = train_model({"model": canonical_model({"kind": "file", "path": str(path)}), "training": training}, arrays, 10, 1)
    assert len(retrained.history) == 2
    spec = {"model": canonical_model({"kind": "file", "path": str(path), "weights": "as_saved"}), "training": training}
    saved = train_model(spec, arrays, 10, 1)
    assert saved.history == [] and saved.status == "ok"
    import keras

    original = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(predict_proba(saved.model, arrays["x_test"]), predict_proba(original, arrays["x_test"]), rtol=1e-6)


def test_safe_mode_refusal_at_load_names_the_file(tmp_path):
    from ablation_lab.models.model_file import ModelFileError, load_model_file

    path = bad_file("lambda", tmp_path)
    with pytest.raises(ModelFileError, match=r"bad\.keras'.*safe_mode=True"):
        load_model_file(str(path))


def test_a_builder_file_builds_the_model_and_its_code_is_part_of_the_run(tmp_path):
    from ablation_lab.identity import canonical_model
    from ablation_lab.models.build import build_model

    config = {
        "study": "own",
        "seeds": [1],
        "dataset": {"name": "digits"},
        "model": {"kind": "builder", "builder": "mlp_batchnorm", "hidden_units": [8]},
        "families": {"dropout": {"rates": [0.0, 0.2]}, "capacity": {"widths": [4], "depths": [2]}},
    }
    found = study(config)
    spec = found.run_spec(found.variants["capacity/w4-d2"])["model"]
    assert len(spec["builder_sha256"]) == 16  # the builder file's content digest
    assert found.run_of(found.variants["baseline/reference"]).startswith("relu-mlp_batchnorm-8-")
    model = build_model(canonical_model(spec), DIGITS, 10)
    assert [layer.name for layer in model.layers if layer.name.startswith("hidden_")] == ["hidden_1", "hidden_2"]


def residual_file(path: Path) -> Path:
    """A model with a skip connection: not a chain."""
    import keras
    from keras import layers

    inputs = keras.Input(DIGITS)
    flat = layers.Flatten(name="flat")(inputs)
    first = layers.Dense(12, activation="relu", name="hidden_1")(flat)
    second = layers.Dense(12, activation="relu", name="hidden_2")(first)
    joined = layers.Add(name="skip")([first, second])
    return save(keras.Model(inputs, layers.Dense(10, activation="softmax", name="out")(joined)), path)


def test_knockout_of_a_branching_model_file_is_accepted_and_runs_through_the_graph(tmp_path):
    from ablation_lab.analyses import knockout
    from ablation_lab.models import surgery
    from ablation_lab.models.build import load_model

    path = residual_file(tmp_path / "res.keras")
    config = study_config(path, families={})
    config["posthoc"] = {"compensation": False, "layers": ["hidden_2"]}
    study(config)  # accepted before any job: post-hoc knockout reruns the graph
    config["posthoc"]["layers"] = ["skip"]
    with pytest.raises(
        ConfigError, match=r"posthoc.layers\[0\]: 'skip' is not a knock-out-able layer of this model \(available: hidden_1, hidden_2\)"
    ):
        study(config)
    config.pop("posthoc")
    config["reliance"] = {"layers": ["hidden_1"]}
    with pytest.raises(
        ConfigError, match=r"^invalid study config: reliance: needs a chain model .* layer 'skip' takes 'hidden_1', 'hidden_2'"
    ):
        study(config)
    config.pop("reliance")
    config["faults"] = {"activation_layers": ["hidden_1"]}
    with pytest.raises(ConfigError, match=r"^invalid study config: faults.activation_layers: needs a chain model .* layer 'skip'"):
        study(config)
    config.pop("faults")
    config["self_repair"] = {"layers": ["hidden_1"]}
    with pytest.raises(ConfigError, match=r"^invalid study config: self_repair: needs a chain model or the built-in resnet"):
        study(config)
    model = load_model(str(path))
    with pytest.raises(ValueError, match="needs a chain model"):  # the chain path still refuses it
        surgery.knockout_layers(model)
    assert surgery.knockout_layers(model, branching=True) == ["hidden_1", "hidden_2"]
    rng = np.random.default_rng(0)
    data = {split: rng.random((n, *DIGITS)).astype(np.float32) for split, n in (("train", 50), ("val", 30), ("test", 40))}
    labels = {split: rng.integers(0, 10, len(x)).astype(np.int32) for split, x in data.items()}
    params = {"layers": ["hidden_1"], "fractions": [0.0, 1.0], "orderings": ["random"], "fills": ["zero"], "draws": 1}
    table = knockout.knockout_table(model, data, labels, [str(c) for c in range(10)], KnockoutParams.of(params), seed=1)
    accuracy = table.query("metric == 'accuracy'").set_index("fraction")["value"]
    own = predict_proba(model, data["test"]).argmax(axis=1)
    assert accuracy[0.0] == (own == labels["test"]).mean()


def test_elasticity_of_a_branching_model_takes_the_full_jacobian_path(tmp_path):
    from ablation_lab.analyses import elasticity
    from ablation_lab.models import one_step
    from ablation_lab.models.build import load_model

    model = load_model(str(residual_file(tmp_path / "res.keras")))
    with pytest.raises(one_step.UnsupportedLayer, match="'skip' does not take the previous layer's output"):
        one_step.float64_network(model)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 4)
    params = {"samples": 30, "learning_rate": 1e-3, "seed": 0, "method": "first_order", "check_rows": 2}
    table, _ = elasticity.elasticity_table(model, rng.random((40, *DIGITS)), y, ElasticityParams.of(params))
    scores = table[table["example"].isna()].set_index("metric")["value"]
    assert 0 <= scores["auc"] <= 1 and scores["first_order_error"] < 0.05


def test_a_builders_model_with_code_layers_or_without_probabilities_is_refused():
    import keras
    from ablation_lab.models.build import check_builder_model
    from keras import layers

    inputs = keras.Input(DIGITS)
    flat = layers.Flatten()(inputs)
    logits = keras.Model(inputs, layers.Dense(10, name="logits")(flat))
    with pytest.raises(ValueError, match=r"model.builder: mine: the model's outputs are not probabilities .* end the model with a softmax"):
        check_builder_model(logits, "mine", DIGITS)
    coded = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Lambda(lambda t: t * 2, name="twice")(flat)))
    with pytest.raises(ValueError, match=r"model\.builder: mine: layer 'twice' is a Lambda layer"):
        check_builder_model(coded, "mine", DIGITS)
    check_builder_model(keras.Model(inputs, layers.Dense(10, activation="softmax")(flat)), "mine", DIGITS)
