"""Self-repair (issue 27): direct and total effects by hand on residual and chain models, direct = total where nothing
can repair, a zero-initialised branch does nothing, the stages sum to the self-repair, bad config lines refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import self_repair
from ablation_lab.analyses.self_repair import SelfRepairParams
from ablation_lab.analyses.self_repair_report import estimates, per_seed, pooled
from ablation_lab.statistics.intervals import share_interval
from scipy.special import log_softmax

ZERO = {"layers": [], "groups": 2, "fills": ["zero"], "families": ["baseline"], "margin": 0.01}
N = 40


def relu(v):
    return np.maximum(v, 0.0)


def weights(rng, *shape, scale=0.6):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def residual_model(rng, zero_branch: bool = False, head_relu: bool = True):
    """Two residual blocks on a flat stream of width 4 (Dense layers named as the resnet's), known weights."""
    import keras
    from keras import layers

    inputs = keras.Input((3,), name="features")
    stream = layers.Dense(4, name="stem_conv")(inputs)
    for k in (1, 2):
        branch = layers.Activation("relu", name=f"block_{k}_relu_1")(stream)
        branch = layers.Dense(4, name=f"block_{k}_conv_1")(branch)
        branch = layers.Activation("relu", name=f"block_{k}_relu_2")(branch)
        branch = layers.Dense(4, name=f"block_{k}_conv_2")(branch)
        stream = layers.Add(name=f"block_{k}_add")([stream, branch])
    head = layers.Activation("relu", name="head_relu")(stream) if head_relu else stream
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probabilities")(head))
    values = {layer.name: [weights(rng, *w.shape) for w in layer.get_weights()] for layer in model.layers if layer.get_weights()}
    if zero_branch:
        values["block_1_conv_2"] = [np.zeros_like(w) for w in values["block_1_conv_2"]]
    for name, found in values.items():
        model.get_layer(name).set_weights(found)
    return model, values


def metric_drops(clean, changed, labels):
    rows = np.arange(len(labels))
    score = [lambda z: z[rows, labels], lambda z: log_softmax(z, axis=1)[rows, labels], lambda z: (z.argmax(1) == labels) * 1.0]
    return {m: (f(clean) - f(changed)).mean() for m, f in zip(self_repair.METRICS, score, strict=True)}


def measured(table, component, quantity, by=""):
    part = table[(table["component"] == component) & (table["quantity"] == quantity) & (table["by"] == by)]
    return dict(zip(part["metric"], part["value"], strict=True))


def data(rng, width):
    return {"train": rng.normal(size=(30, width)).astype(np.float32), "test": rng.normal(size=(N, width)).astype(np.float32)}, rng.integers(
        0, 3, N
    )


def test_two_block_residual_direct_total_and_repair_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    model, w = residual_model(rng)
    inputs, labels = data(rng, 3)
    table, arrays = self_repair.self_repair_table(model, inputs, labels, SelfRepairParams.of(ZERO))

    def dense(name, v):
        kernel, bias = w[name]
        return v @ kernel + bias

    def write(k, s):
        return dense(f"block_{k}_conv_2", relu(dense(f"block_{k}_conv_1", relu(s))))

    def head(s):
        return dense("probabilities", relu(s))

    def frozen_head(s):  # the head's ReLU gating held at its clean pattern
        return logits + dense("probabilities", (s - s2) * (s2 > 0)) - w["probabilities"][1]

    s0 = dense("stem_conv", inputs["test"])
    w1 = write(1, s0)
    s1 = s0 + w1
    w2 = write(2, s1)
    s2 = s1 + w2
    logits = head(s2)
    # block 1 removed: total lets block 2 and the head react; direct holds block 2's write and the head's gating
    total_1 = head(s0 + write(2, s0))
    direct_1 = frozen_head(s0 + w2)
    block_2_step = frozen_head(s0 + write(2, s0))  # block 2 reacts, the head still frozen
    # block 2 removed: only the head can react
    total_2, direct_2 = head(s1), frozen_head(s1)
    for component, direct, total in (("block_1", direct_1, total_1), ("block_2", direct_2, total_2)):
        want_direct, want_total = metric_drops(logits, direct, labels), metric_drops(logits, total, labels)
        for metric in self_repair.METRICS:
            assert measured(table, component, "direct")[metric] == pytest.approx(want_direct[metric], abs=1e-4)
            assert measured(table, component, "total")[metric] == pytest.approx(want_total[metric], abs=1e-4)
            repair = want_direct[metric] - want_total[metric]
            assert measured(table, component, "self_repair")[metric] == pytest.approx(repair, abs=1e-4)
    by_block_2 = metric_drops(logits, direct_1, labels)["logit"] - metric_drops(logits, block_2_step, labels)["logit"]
    assert measured(table, "block_1", "repair_by", "block_2")["logit"] == pytest.approx(by_block_2, abs=1e-4)
    steps = sum(measured(table, "block_1", "repair_by", by)["logit"] for by in ("block_2", "head"))
    assert steps == pytest.approx(measured(table, "block_1", "self_repair")["logit"], abs=1e-4)
    assert arrays["drops"].shape == (2 * 2 * 3, N)  # (direct, total) x blocks x metrics, one column per test example
    assert np.nonzero(abs(total_1 - direct_1).sum(axis=1))[0].size  # the hand model does repair: the test can fail


def test_a_zero_initialised_branch_removed_changes_nothing():
    rng = np.random.default_rng(1)
    model, _ = residual_model(rng, zero_branch=True)
    inputs, labels = data(rng, 3)
    table, _ = self_repair.self_repair_table(model, inputs, labels, SelfRepairParams.of(ZERO | {"fills": ["zero", "mean"]}))
    block = table[table["component"] == "block_1"]
    assert len(block) and np.allclose(block["value"], 0.0, atol=1e-6)
    assert not np.allclose(table.loc[table["component"] == "block_2", "value"], 0.0)


def test_direct_equals_total_when_the_downstream_is_linear():
    """A chain whose layers after the removed one are affine, and the last block of a residual net with a linear head."""
    import keras
    from keras import layers

    rng = np.random.default_rng(2)
    inputs = keras.Input((5,), name="features")
    x = layers.Dense(8, activation="relu", name="a")(inputs)
    x = layers.Dense(6, name="b")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    x = layers.Activation("linear", name="c")(x)
    chain = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probabilities")(x))
    (x_in, labels) = data(rng, 5)
    table, _ = self_repair.self_repair_table(chain, x_in, labels, SelfRepairParams.of(ZERO | {"groups": 4, "fills": ["zero", "mean"]}))
    direct, total = (table[table["quantity"] == q]["value"].to_numpy() for q in ("direct", "total"))
    assert np.abs(direct).max() > 1e-3 and np.allclose(direct, total, atol=1e-5)
    residual, _ = residual_model(rng, head_relu=False)
    inputs, labels = data(rng, 3)
    table, _ = self_repair.self_repair_table(residual, inputs, labels, SelfRepairParams.of(ZERO))
    last = table[table["component"] == "block_2"]
    assert np.allclose(last.loc[last["quantity"] == "self_repair", "value"], 0.0, atol=1e-5)


def test_chain_direct_effect_freezes_the_later_relu_gating_as_by_hand():
    import keras
    from keras import layers

    rng = np.random.default_rng(3)
    inputs = keras.Input((4,), name="features")
    h1 = layers.Dense(6, activation="relu", name="hidden_1")(inputs)
    h2 = layers.Dense(5, activation="relu", name="hidden_2")(h1)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probabilities")(h2))
    w = [weights(rng, *v.shape) for v in model.get_weights()]
    model.set_weights(w)
    x, labels = data(rng, 4)
    table, _ = self_repair.self_repair_table(model, x, labels, SelfRepairParams.of(ZERO | {"groups": 3, "fills": ["zero", "mean"]}))
    assert set(table["layer"]) == {"hidden_1"}  # the last hidden layer is not a component: nothing can repair it
    pre1 = x["test"] @ w[0] + w[1]
    h1v = relu(pre1)
    pre2 = h1v @ w[2] + w[3]
    logits = relu(pre2) @ w[4] + w[5]
    mean = relu(x["train"] @ w[0] + w[1]).mean(axis=0)
    for fill, value in (("zero", np.zeros(6)), ("mean", mean)):
        for group, members in enumerate(np.array_split(np.arange(6), 3), start=1):
            ablated = h1v.copy()
            ablated[:, members] = value[members]
            total = relu(ablated @ w[2] + w[3]) @ w[4] + w[5]
            direct = logits + (((ablated - h1v) @ w[2]) * (pre2 > 0)) @ w[4]
            rows = table[(table["component"] == f"hidden_1:g{group}") & (table["fill"] == fill)]
            got = {q: dict(zip(rows.loc[rows["quantity"] == q, "metric"], rows.loc[rows["quantity"] == q, "value"], strict=True)) for q in ("direct", "total")}  # fmt: skip
            for metric in self_repair.METRICS:
                assert got["direct"][metric] == pytest.approx(metric_drops(logits, direct, labels)[metric], abs=1e-4)
                assert got["total"][metric] == pytest.approx(metric_drops(logits, total, labels)[metric], abs=1e-4)


def test_cnn_stages_through_max_pooling_sum_to_the_self_repair():
    from ablation_lab.models.build import build_cnn

    rng = np.random.default_rng(4)
    cfg = {"filters": [3, 4], "kernel_size": 3, "batch_norm": True, "pooling": "max", "dropout": 0.0, "activation": "relu"}
    model = build_cnn((8, 8), 3, cfg | {"hidden_units": [5]})
    model.set_weights([weights(rng, *v.shape) if v.ndim > 1 else np.abs(weights(rng, *v.shape)) + 0.5 for v in model.get_weights()])
    x = {"train": rng.normal(size=(20, 8, 8)).astype(np.float32), "test": rng.normal(size=(N, 8, 8)).astype(np.float32)}
    table, _ = self_repair.self_repair_table(model, x, rng.integers(0, 3, N), SelfRepairParams.of(ZERO | {"groups": 2}))
    assert set(table["layer"]) == {"conv_act_1", "conv_act_2"}
    assert set(table.loc[table["layer"] == "conv_act_1", "by"]) - {""} == {"pool_1", "conv_act_2", "pool_2", "hidden_1"}
    for _, part in table.groupby(["component", "metric"]):
        steps = part.loc[part["quantity"] == "repair_by", "value"].sum()
        assert steps == pytest.approx(part.loc[part["quantity"] == "self_repair", "value"].iat[0], abs=1e-4)


def test_intervals_pool_seeds_and_examples_and_the_share_needs_a_clear_direct_effect():
    rng = np.random.default_rng(5)
    rows, arrays = [], {}
    for seed in (1, 2, 3):
        direct = rng.normal(1.0, 0.3, size=N).astype(np.float32)
        total = (0.6 * direct + rng.normal(0, 0.05, size=N)).astype(np.float32)
        arrays[("baseline", "baseline", seed)] = {"drops": np.stack([direct, total])}
        base = {"family": "baseline", "variant": "baseline", "seed": seed, "layer": "l", "component": "l:g1", "units": "0-1"}
        base |= {"depth": 1, "fill": "zero", "metric": "logit", "by": ""}
        rows += [
            base | {"quantity": "direct", "value": direct.mean(), "row": 0},
            base | {"quantity": "total", "value": total.mean(), "row": 1},
        ]
    seeds = per_seed(pd.DataFrame(rows), arrays)
    out = estimates(pooled(seeds, ["family", "variant", "fill", "metric"]), ["family", "variant", "fill", "metric"]).iloc[0]
    assert out["verdict"].startswith("repaired") and out["share_low"] < 0.4 < out["share_high"]
    assert out["self_repair"] == pytest.approx(out["direct"] - out["total"])
    undefined = share_interval([0.1, -0.1, 0.05], [0.2, -0.3, 0.1])
    assert np.isnan(undefined["low"]) and "includes 0" in undefined["method"]


BAD = [
    ({"layers": ["hidden_9"]}, "self_repair.layers[0]: 'hidden_9' is not a knock-out-able layer"),
    ({"layers": [1]}, "self_repair.layers[0]: 1 is the model's last hidden layer"),
    ({"layers": [3]}, "self_repair.layers[0]: layer 3, but the model has 1 hidden layers"),
    ({"families": ["nope"]}, "self_repair.families[0]: 'nope' is not a family of this study"),
    ({"fills": ["resample"]}, "self_repair.fills[0]"),
    ({"groups": 0}, "self_repair.groups"),
]


@pytest.mark.parametrize(("block", "fragment"), BAD, ids=[str(b) for b, _ in BAD])
def test_a_bad_self_repair_block_is_refused_in_one_line_naming_the_key(test_config, block, fragment):
    from ablation_lab.config import ConfigError
    from ablation_lab.study import Study

    with pytest.raises(ConfigError) as caught:
        Study.from_config(test_config | {"self_repair": block}).analysis_params()
    assert "\n" not in str(caught.value) and fragment in str(caught.value)


def test_self_repair_is_off_by_default_and_its_presets_ask_for_it(root):
    from ablation_lab.config import load_config_file

    assert self_repair.self_repair_params(load_config_file(root / "config" / "config.yaml")) is None
    for name in ("self_repair.yaml", "self_repair_cnn.yaml", "self_repair_resnet.yaml"):
        assert set(self_repair.self_repair_params(load_config_file(root / "config" / name))) >= set(self_repair.KEYS)


@pytest.mark.workflow
def test_a_self_repair_study_runs_and_reports_the_section(tmp_path):
    from workflow_helpers import snakemake, write_config

    config = {
        "study": "self-repair-smoke",
        "seeds": [1, 2],
        "dataset": {"name": "digits", "validation_fraction": 0.2, "test_fraction": 0.25, "split_seed": 42},
        "model": {"hidden_units": [16, 8], "activation": "relu", "dropout": 0.0},
        "training": {"epochs": 2, "batch_size": 64, "early_stopping_patience": 0},
        "self_repair": {"groups": 4, "fills": ["zero", "mean"]},
    }
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    page = (tmp_path / "reports" / "self-repair-smoke" / "report.html").read_text()
    assert 'id="self_repair"' in page and "Does the network repair a removal?" in page
    models = pd.read_csv(tmp_path / "reports" / "self-repair-smoke" / "tables" / "self_repair_models.csv")
    assert set(models["fill"]) == {"zero", "mean"} and models["seeds"].eq(2).all()


def test_the_built_in_resnet_total_effect_matches_the_graph_engine_and_its_stages_sum_to_the_self_repair():
    """model.kind resnet (a 1x1 conv shortcut where the stream widens, batch norm): the total effect of a zeroed
    write as models/graph.py reruns it, and the stages (later blocks, head) adding up to direct - total."""
    from ablation_lab.models.graph import Graph
    from ablation_lab.models.resnet import build_resnet

    rng = np.random.default_rng(6)
    cfg = {"blocks": 3, "filters": [4, 8], "kernel_size": 3, "batch_norm": True, "activation": "relu", "dropout": 0.0}
    model = build_resnet((8, 8), 3, cfg)
    model.set_weights([weights(rng, *v.shape) if v.ndim > 1 else np.abs(weights(rng, *v.shape)) + 0.5 for v in model.get_weights()])
    assert "block_2_shortcut" in [layer.name for layer in model.layers]
    x = {"train": rng.normal(size=(20, 8, 8)).astype(np.float32), "test": rng.normal(size=(N, 8, 8)).astype(np.float32)}
    labels = rng.integers(0, 3, N)
    table, _ = self_repair.self_repair_table(model, x, labels, SelfRepairParams.of(ZERO))
    assert list(dict.fromkeys(table["component"])) == ["block_1", "block_2", "block_3"]
    graph = Graph(model)
    clean = graph.capture(x["test"], ["block_1_conv_2"])["logits"]
    for k in (1, 2, 3):
        total = graph.rerun(x["test"], {f"block_{k}_conv_2": np.zeros(1, np.float32)}, output="logits")
        assert measured(table, f"block_{k}", "total")["logit"] == pytest.approx(metric_drops(clean, total, labels)["logit"], abs=1e-4)
        later = {f"block_{j}" for j in range(k + 1, 4)} | {"head"}
        rows = table[(table["component"] == f"block_{k}") & (table["metric"] == "logit")]
        assert set(rows.loc[rows["quantity"] == "repair_by", "by"]) == later
        steps = rows.loc[rows["quantity"] == "repair_by", "value"].sum()
        assert steps == pytest.approx(rows.loc[rows["quantity"] == "self_repair", "value"].iat[0], abs=1e-4)


def test_a_branching_model_that_is_not_a_residual_network_is_refused_in_one_line():
    import keras
    from keras import layers

    inputs = keras.Input((4,), name="features")
    left, right = layers.Dense(3, activation="relu", name="left")(inputs), layers.Dense(3, activation="relu", name="right")(inputs)
    merged = layers.Concatenate(name="both")([left, right])
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="probabilities")(merged))
    with pytest.raises(ValueError, match=r"\Aself_repair: the model is neither a chain nor a residual network") as caught:
        self_repair.components(model, SelfRepairParams.of(ZERO))
    assert "\n" not in str(caught.value)


def test_a_smooth_activation_is_held_at_its_clean_slope():
    """tanh after the removed layer: the direct effect is the first-order one, 1 - tanh^2 at the clean input."""
    import keras
    from keras import layers

    rng = np.random.default_rng(7)
    inputs = keras.Input((4,), name="features")
    h1 = layers.Dense(6, activation="tanh", name="hidden_1")(inputs)
    h2 = layers.Dense(5, activation="tanh", name="hidden_2")(h1)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probabilities")(h2))
    w = [weights(rng, *v.shape) for v in model.get_weights()]
    model.set_weights(w)
    x, labels = data(rng, 4)
    table, _ = self_repair.self_repair_table(model, x, labels, SelfRepairParams.of(ZERO | {"groups": 1}))
    h1v = np.tanh(x["test"] @ w[0] + w[1])
    pre2 = h1v @ w[2] + w[3]
    logits = np.tanh(pre2) @ w[4] + w[5]
    direct = logits + ((-h1v @ w[2]) * (1 - np.tanh(pre2) ** 2)) @ w[4]
    total = np.tanh(w[3][None] + 0 * pre2) @ w[4] + w[5]
    assert measured(table, "hidden_1:g1", "direct")["logit"] == pytest.approx(metric_drops(logits, direct, labels)["logit"], abs=1e-4)
    assert measured(table, "hidden_1:g1", "total")["logit"] == pytest.approx(metric_drops(logits, total, labels)["logit"], abs=1e-4)


def test_one_seed_gives_no_bound_sentence_and_says_why():
    from ablation_lab.analyses.self_repair_report import model_sentence

    row = pd.Series(
        {"family": "baseline", "variant": "reference", "fill": "zero", "metric": "logit", "total": 2.0, "direct": 1.0}
        | {"self_repair": -1.0, "self_repair_low": np.nan, "self_repair_high": np.nan, "share": -1.0, "share_low": np.nan}
        | {"share_high": np.nan, "verdict": "not testable (needs 2+ seeds)"}
    )
    sentence = model_sentence(row)
    assert "No interval (one seed)" in sentence and "interval includes 0" not in sentence
