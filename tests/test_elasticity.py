"""Local elasticity: closed forms, the batched form against actually taking the step, the summaries and the section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from ablation_lab.analyses import elasticity, similarity
from ablation_lab.analyses.elasticity import ElasticityParams
from ablation_lab.analyses.registry import ANALYSES, RunContext
from ablation_lab.models import one_step

PARAMS = {"samples": 30, "learning_rate": 1e-3, "seed": 0, "method": "first_order", "check_rows": 3}


@pytest.fixture(scope="module")
def tf():
    from ablation_lab.training.train import configure_tensorflow

    configure_tensorflow(threads=1)
    import tensorflow

    return tensorflow


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def linear_model(kernel: np.ndarray, bias: np.ndarray):
    """Softmax regression (no hidden layer) with the given weights."""
    from ablation_lab.models.build import build_mlp

    model = build_mlp((kernel.shape[0],), kernel.shape[1], [], "relu", 0.0)
    model.get_layer("probabilities").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def small_mlp(activation: str, inputs: int = 5, classes: int = 3, seed: int = 0, kind: str = "mlp"):
    import keras
    from ablation_lab.models.build import build_mlp

    keras.utils.set_random_seed(seed)
    return build_mlp((inputs,), classes, [7, 6], activation, 0.0, kind=kind)


def trained_away_from_init(model):
    """Move every learnable activation's parameter off its initial value, as training would.

    At initialisation a GP activation is relu-like and a standard-basis one is exactly relu:
    a test must not pass only because the learned function happens to be a fixed one.
    """
    from ablation_lab.models.layers import LEARNABLE_LAYERS

    rng = np.random.default_rng(8)
    for layer in model.layers:
        if isinstance(layer, LEARNABLE_LAYERS):
            (weight,) = layer.get_weights()
            layer.set_weights([weight + 0.1 * rng.normal(size=weight.shape).astype(weight.dtype)])
    return model


# --- the changes ------------------------------------------------------------------------------

# A hand-made problem: 3 classes in the plane, one point near each corner, one in between.
X = np.array([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [0.1, 0.8], [-1.0, -1.0], [-0.8, -1.1], [0.3, 0.3]])
Y = np.array([0, 0, 1, 1, 2, 2, 0])
W = np.array([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0]])
B = np.array([0.1, -0.2, 0.3])


def test_a_linear_model_matches_the_closed_form(tf):
    # z = xW + b, p = softmax(z); one step on (x_i, y_i) moves every logit by
    # dz_j = -lr (x_i . x_j + 1)(p_i - e_{y_i}) exactly (z is linear in the weights), so
    # f(x_j; w+) = softmax(z_j + dz_j), and to first order the change is J_softmax(p_j) dz_j.
    lr = 0.05
    z, p = X @ W + B, softmax(X @ W + B)
    step = p - np.eye(3)[Y]  # dL/dz at each x_i
    shift = -lr * (X @ X.T + 1)[:, :, None] * step[:, None, :]  # shift[i, j] = dz_j after the step on x_i
    exact = softmax(z[None] + shift) - p[None]
    jacobian = np.stack([np.diag(q) - np.outer(q, q) for q in p])  # dp/dz at each x_j
    linearised = np.einsum("jcd,ijd->ijc", jacobian, shift)

    network = one_step.float64_network(linear_model(W, B))
    network = one_step.Network(network.steps, tuple(tf.constant(w, tf.float64) for w in (W, B)))
    first, gradient_norms = one_step.first_order_changes(network, X, Y, lr)
    assert one_step.exact_changes(network, X, Y, lr, range(len(X))) == pytest.approx(exact, abs=1e-13)
    assert first == pytest.approx(linearised, abs=1e-13)
    assert gradient_norms == pytest.approx(1 / p[np.arange(len(Y)), Y])  # ||dL/df|| = 1 / p_y
    norms = np.linalg.norm(exact, axis=2)
    s_rel = norms / np.diag(norms)[:, None]
    assert similarity.relative_similarity(norms) == pytest.approx(s_rel)
    assert np.diag(similarity.relative_similarity(norms)) == pytest.approx(1.0)
    s_ker = np.linalg.norm(linearised, axis=2) * p[np.arange(len(Y)), Y][:, None] / lr
    assert similarity.kernel_similarity(np.linalg.norm(first, axis=2), gradient_norms, lr) == pytest.approx(s_ker)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
def test_the_batched_first_order_form_equals_taking_each_step(tf, activation):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    network = one_step.float64_network(small_mlp(activation))
    errors = {}
    for lr in (1e-6, 1.0):
        first, _ = one_step.first_order_changes(network, x, y, lr)
        exact = one_step.exact_changes(network, x, y, lr, range(len(x)))
        errors[lr] = np.linalg.norm(first - exact) / np.linalg.norm(exact)
    assert errors[1e-6] < 1e-4, "the first-order form is the exact step's derivative"
    assert errors[1.0] > 100 * errors[1e-6], "a large step leaves the first-order regime: the comparison can fail"


LEARNABLE_MODELS = {  # id -> (hidden activation, model kind)
    "gp": ("gp", "mlp"),
    "gp-per-unit": ("gp-per-unit", "mlp"),
    "slaf-standard": ("slaf-standard", "mlp"),
    "slaf-poly3": ("slaf-poly3", "mlp"),
    "kst": ("gp", "kst"),  # per-feature GP functions before the first Dense, then a learned outer function
}


def learnable_mlp(model_id: str):
    activation, kind = LEARNABLE_MODELS[model_id]
    return trained_away_from_init(small_mlp(activation, kind=kind))


def first_order_error(network, x: np.ndarray, y: np.ndarray, lr: float) -> float:
    first, _ = one_step.first_order_changes(network, x, y, lr)
    exact = one_step.exact_changes(network, x, y, lr, range(len(x)))
    return float(np.linalg.norm(first - exact) / np.linalg.norm(exact))


@pytest.mark.parametrize("model_id", LEARNABLE_MODELS)
def test_with_learnable_activations_the_batched_form_equals_taking_each_step(tf, model_id, monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    network = one_step.float64_network(learnable_mlp(model_id))
    assert any(isinstance(step, one_step.LearnableStep) for step in network.steps)
    # The error is second order: 10x smaller per 10x smaller step (a learned function curves
    # more than a fixed one, so the step must be smaller than the fixed activations' 1e-6).
    errors = {lr: first_order_error(network, x, y, lr) for lr in (1e-6, 1e-7, 1.0)}
    assert errors[1e-7] < 1e-4, "the first-order form is the exact step's derivative"
    assert errors[1e-6] / errors[1e-7] == pytest.approx(10, rel=0.1)
    assert errors[1.0] > 100 * errors[1e-7], "a large step leaves the first-order regime: the comparison can fail"
    jacobians = one_step.output_jacobians  # without the learnable layers' own parameters, the form is wrong
    monkeypatch.setattr(one_step, "output_jacobians", lambda *args: jacobians(*args)._replace(learnable=[]))
    assert first_order_error(network, x, y, 1e-7) > 1e-2


@pytest.mark.parametrize("model_id", ["gp", "gp-per-unit", "slaf-poly3"])
def test_per_example_parameter_jacobians_equal_one_example_at_a_time(tf, model_id):
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 5)), tf.float64)
    network = one_step.float64_network(learnable_mlp(model_id))
    learnable = [step.index for step in network.steps if isinstance(step, one_step.LearnableStep)]
    jacobians = one_step.output_jacobians(network, x).learnable
    assert len(jacobians) == len(learnable) == 2
    for example in range(len(x)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(network.params)
            output = one_step.forward(network, network.params, x[example : example + 1]).output[0]
        for jacobian, index in zip(jacobians, learnable, strict=True):
            expected = tape.jacobian(output, network.params[index]).numpy().reshape(len(output), -1)
            assert jacobian[example].numpy() == pytest.approx(expected, abs=1e-14)


def test_the_class_by_class_jacobian_equals_tape_batch_jacobian(tf):
    x = tf.constant(np.random.default_rng(2).normal(size=(6, 5)), tf.float64)
    network = one_step.float64_network(small_mlp("tanh"))
    jacobians = one_step.output_jacobians(network, x)
    with tf.GradientTape(persistent=True) as tape:
        trace = one_step.forward(network, network.params, x, tape)
    for jacobian, z in zip(jacobians.dense, trace.pre_activations, strict=True):
        assert jacobian.numpy() == pytest.approx(tape.batch_jacobian(trace.output, z).numpy(), abs=1e-15)


def test_float64_keeps_the_self_change_of_a_confident_example(tf):
    # logit margin 25: p_y = 1 - 3e-11 rounds to exactly 1 in float32 (its self-change would be 0)
    kernel, bias = np.array([[25.0, 0.0], [0.0, 0.0]]), np.zeros(2)
    x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])
    assert np.float32(softmax(x[:1] @ kernel)[0, 0]) == 1.0
    network = one_step.float64_network(linear_model(kernel, bias))
    first, _ = one_step.first_order_changes(network, x, y, 1e-3)
    assert np.linalg.norm(first[0, 0]) > 0


@pytest.mark.parametrize(("activation", "kind"), [("sigmoid", "mlp"), ("gp-per-unit", "mlp"), ("slaf-poly3", "mlp"), ("gp", "kst")])
def test_the_float64_network_computes_what_the_keras_model_predicts(tf, activation, kind):
    from ablation_lab.models.build import build_mlp

    model = build_mlp((4, 3), 5, [6, 7], activation, 0.5, kind=kind)  # image-shaped input: Flatten; dropout off at inference
    trained_away_from_init(model)
    x = np.random.default_rng(7).random((8, 4, 3))
    network = one_step.float64_network(model)
    probabilities = one_step.forward(network, network.params, tf.constant(x, tf.float64)).output
    assert probabilities.dtype == tf.float64
    assert probabilities.numpy() == pytest.approx(model(x.astype(np.float32), training=False).numpy(), abs=1e-5)


def test_only_dense_layers_with_weights_are_accepted(tf):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.BatchNormalization()(inputs)))
    with pytest.raises(ValueError, match="BatchNormalization"):
        one_step.float64_network(model)


# --- similarities, ratios, AUC, clustering ----------------------------------------------------


def test_row_auc_and_the_ratio_see_class_structure_and_ignore_row_scale():
    labels = np.array([0, 0, 0, 1, 1, 1])
    same = (labels[:, None] == labels[None, :]).astype(float)
    elastic = np.where(same == 1, 2.0, 0.5) * np.array([1, 10, 1e-6, 1, 3, 1])[:, None]  # wildly different row scales
    assert similarity.row_aucs(elastic, labels) == pytest.approx(1.0)
    assert similarity.row_aucs(1 / elastic, labels) == pytest.approx(0.0)
    assert similarity.row_aucs(np.ones((6, 6)), labels) == pytest.approx(0.5)
    matrix = similarity.symmetrised(np.where(same == 1, 3.0, 1.0))
    assert similarity.elasticity_ratio(matrix, labels) == pytest.approx(3.0)


def test_row_aucs_equal_scikit_learns_roc_auc_score_row_by_row():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 25)
    norms = rng.integers(0, 5, size=(25, 25)).astype(float)  # many ties
    expected = [roc_auc_score(np.delete(labels == labels[i], i), np.delete(norms[i], i)) for i in range(25)]
    assert similarity.row_aucs(norms, labels) == pytest.approx(expected)


def test_a_zero_self_change_makes_its_relative_row_nan_and_is_not_clustered():
    norms = np.array([[1.0, 0.5, 0.1], [0.3, 0.0, 0.2], [0.1, 0.2, 2.0]])  # x_1 moves others, not itself
    relative = similarity.relative_similarity(norms)
    assert np.isnan(relative[1]).all() and relative[0, 1] == 0.5 and relative[2, 2] == 1.0
    scores = similarity.clustering_scores(similarity.symmetrised(relative), np.array([0, 0, 1]), 2, 0)
    assert all(np.isnan(v) for v in scores.values())


def block_similarity(labels: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    same = labels[:, None] == labels[None, :]
    return similarity.symmetrised(np.where(same, 1.0, 0.05) + noise * rng.random(same.shape))


def test_clustering_an_obviously_separated_similarity_recovers_the_classes():
    labels = np.repeat(np.arange(4), 10)
    scores = similarity.clustering_scores(block_similarity(labels, 0.1), labels, 4, 0)
    assert scores["ari_kmeans"] == pytest.approx(1.0) and scores["ari_spectral"] == pytest.approx(1.0)
    assert scores["nmi_kmeans"] == pytest.approx(1.0) and scores["nmi_spectral"] == pytest.approx(1.0)
    shuffled = similarity.clustering_scores(block_similarity(labels, 0.1), np.random.default_rng(0).permutation(labels), 4, 0)
    assert shuffled["ari_kmeans"] < 0.3 and shuffled["ari_spectral"] < 0.3


# --- the sample and the analysis --------------------------------------------------------------


def test_the_sample_is_stratified_sorted_by_class_and_the_same_for_every_model():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])[np.random.default_rng(3).permutation(100)]
    sample = elasticity.stratified_sample(labels, 20, 0)
    assert np.bincount(labels[sample]).tolist() == [8, 6, 4, 2]
    assert (np.diff(labels[sample]) >= 0).all() and len(set(sample)) == 20
    assert (elasticity.stratified_sample(labels, 20, 0) == sample).all()
    assert set(elasticity.stratified_sample(labels, 20, 1)) != set(sample)
    with pytest.raises(ValueError, match=r"elasticity\.samples: 101 examples asked, but the test split has 100"):
        elasticity.stratified_sample(labels, 101, 0)
    with pytest.raises(ValueError, match=r"elasticity\.samples: 6 .* fewer than 2"):
        elasticity.stratified_sample(labels, 6, 0)


class SplitGuard(RunContext):
    """A run context that serves the test split only and records what was asked of it."""

    def __init__(self, model, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__(Path("."), "", "", {"transforms": []}, 1)
        self._model, self._x, self._y, self.asked = model, x, y, []

    @property
    def model(self):
        return self._model

    def inputs(self, split: str = "test") -> np.ndarray:
        self.asked.append(split)
        assert split == "test", f"elasticity read the {split} split"
        return self._x

    def labels(self, split: str = "test") -> np.ndarray:
        self.asked.append(split)
        assert split == "test", f"elasticity read the {split} labels"
        return self._y


def test_the_analysis_reads_the_test_split_only_and_writes_its_rows(tf):
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 5)) + 2 * np.eye(5)[y]
    context = SplitGuard(small_mlp("tanh"), x, y)
    table, arrays = ANALYSES["elasticity"].run(context, ElasticityParams.of(PARAMS))
    assert set(context.asked) == {"test"}
    scores = table[table["example"].isna()].set_index("metric")["value"]
    assert {"auc", "ratio_kernel", "ratio_relative", "ari_spectral_kernel", "nmi_kmeans_inputs", "first_order_error"} <= set(scores.index)
    assert 0 <= scores["auc"] <= 1 and scores["first_order_error"] < 0.05
    rows = table[table["metric"] == "row_auc"]
    assert len(rows) == 30 and set(rows["example"]) == set(arrays["sample"]) and rows["value"].mean() == pytest.approx(scores["auc"])
    exact, _ = ANALYSES["elasticity"].run(SplitGuard(context.model, x, y), ElasticityParams.of(PARAMS | {"method": "exact"}))
    assert exact.set_index(["metric", "example"])["value"].loc["auc"].item() == pytest.approx(scores["auc"], abs=0.02)


@pytest.mark.parametrize("model_id", ["gp-per-unit", "kst"])
def test_the_analysis_steps_a_model_with_learnable_activations_too(tf, model_id):
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 5)) + 2 * np.eye(5)[y]
    table, arrays = ANALYSES["elasticity"].run(SplitGuard(learnable_mlp(model_id), x, y), ElasticityParams.of(PARAMS))
    scores = table[table["example"].isna()].set_index("metric")["value"]
    assert 0 <= scores["auc"] <= 1 and scores["first_order_error"] < 0.05
    assert len(table[table["metric"] == "row_auc"]) == 30 and arrays["change_norms"].shape == (30, 30)


def test_a_diverged_model_gives_an_empty_table_and_the_figure_says_so(tf, tmp_path):
    from ablation_lab.analyses.elasticity import elasticity_section, plot_elasticity
    from ablation_lab.report.sections import ReportInputs

    model = small_mlp("relu")
    kernel, bias = model.get_layer("hidden_1").get_weights()
    model.get_layer("hidden_1").set_weights([np.full_like(kernel, np.nan), bias])
    y = np.repeat(np.arange(3), 20)
    table, arrays = elasticity.elasticity_table(model, np.ones((60, 5)), y, ElasticityParams.of(PARAMS))
    assert table.empty and list(table.columns) == elasticity.COLUMNS and len(arrays["sample"]) == 30
    plot_elasticity(table.assign(family=[], variant=[], seed=[]), [], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
    (section,) = elasticity_section(ReportInputs(study={}, meta={}, tables={"elasticity": table}))
    assert "Not analysed" in section.blocks[0]["text"]


# --- across seeds: summary, the claim, the section ----------------------------------------------


def elasticity_rows(family: str, variant: str, seed: int, row_auc: np.ndarray, ratio: float) -> list[dict]:
    base = {"family": family, "variant": variant, "seed": seed, "run": f"{variant}-run"}
    rows = [base | {"metric": "auc", "example": np.nan, "value": row_auc.mean()}]
    rows += [base | {"metric": m, "example": np.nan, "value": v} for m, v in (("ratio_kernel", ratio), ("ratio_relative", ratio))]
    rows += [base | {"metric": m, "example": np.nan, "value": 0.5} for m in ("ari_spectral_kernel", "ari_kmeans_inputs")]
    return rows + [base | {"metric": "row_auc", "example": i, "value": v} for i, v in enumerate(row_auc)]


def study_table(nonlinear: float, linear: float, seeds: tuple[int, ...] = (1, 2, 3), **levels: float) -> pd.DataFrame:
    """relu and tanh at `nonlinear`, linear at `linear`, and any other activation at its own level."""
    rng = np.random.default_rng(5)
    rows = []
    for seed in seeds:
        for variant, level in {"relu": nonlinear, "tanh": nonlinear, **levels, "linear": linear}.items():
            rows += elasticity_rows("activation", variant, seed, np.clip(level + 0.05 * rng.normal(size=40), 0, 1), 2 * level)
    return pd.DataFrame(rows)


def test_the_claim_is_tested_per_activation():
    held = elasticity.activation_claims(study_table(0.8, 0.55)).set_index("activation")
    assert list(held.index) == ["relu", "tanh"] and set(held["verdict"]) == {"held"} and (held["low"] > 0).all()
    assert held.loc["relu", "estimate"] == pytest.approx(0.25, abs=0.03)
    assert "held for relu, tanh" in elasticity.claims_sentence(held.reset_index())
    assert set(elasticity.activation_claims(study_table(0.55, 0.8))["verdict"]) == {"contradicted"}
    assert set(elasticity.activation_claims(study_table(0.6, 0.6))["verdict"]) == {"within seed noise"}
    alone = elasticity.activation_claims(study_table(0.8, 0.55, seeds=(1,)))
    assert alone["verdict"].str.startswith("not testable").all() and "could not be tested for relu, tanh" in elasticity.claims_sentence(
        alone
    )
    assert elasticity.activation_claims(study_table(0.8, 0.55).query("variant != 'linear'")) is None


def test_one_verdict_per_activation_names_which_hold_and_which_do_not():
    """Pooling relu, tanh and sigmoid would hide that only one of them differs from linear."""
    claims = elasticity.activation_claims(study_table(0.56, 0.55, sigmoid=0.8)).set_index("activation")
    assert claims.loc["sigmoid", "verdict"] == "held" and claims.loc["relu", "verdict"] == "within seed noise"
    sentence = elasticity.claims_sentence(claims.reset_index())
    assert "held for sigmoid" in sentence and "was not resolved for relu, tanh" in sentence
    assert (claims["level"] >= 0.95).all() and claims["p_holm"].notna().all(), "Holm-adjusted over the activations"


def test_the_learnable_activations_get_their_own_verdict():
    rng = np.random.default_rng(9)
    learned = [elasticity_rows("activation", "gp", seed, np.clip(0.3 + 0.05 * rng.normal(size=40), 0, 1), 0.6) for seed in (1, 2)]
    table = pd.concat([study_table(0.8, 0.55), pd.DataFrame([row for rows in learned for row in rows])])  # gp: seed 3 missing
    claims = elasticity.activation_claims(table).set_index("activation")
    assert list(claims.index) == ["relu", "tanh", "gp"] and claims["learnable"].tolist() == [False, False, True]
    assert claims.loc["gp", "seeds"] == 2 and claims.loc["relu", "seeds"] == 3, "each paired on the seeds both sides have"
    assert claims.loc["gp", "estimate"] < 0
    assert "gp" in set(elasticity.variant_summary(table)["variant"])


def test_the_summary_gives_each_variant_an_interval_from_the_statistics_module():
    from ablation_lab.statistics.inference import mean_interval

    table = study_table(0.8, 0.55)
    summary = elasticity.variant_summary(table).set_index("variant")
    relu = table[(table["variant"] == "relu") & (table["metric"] == "auc")]["value"].to_numpy()
    rows = table[(table["variant"] == "relu") & (table["metric"] == "row_auc")].pivot(index="seed", columns="example", values="value")
    expected = mean_interval(relu, hits=rows.to_numpy())
    assert summary.loc["relu", ["auc_mean", "auc_low", "auc_high"]].tolist() == pytest.approx(
        [expected[k] for k in ("estimate", "low", "high")]
    )
    assert summary.loc["relu", "ratio_kernel_low"] < 1.6 < summary.loc["relu", "ratio_kernel_high"]


def test_the_section_renders_with_its_figure_and_verdict(tmp_path):
    from ablation_lab.analyses.elasticity import elasticity_section, plot_elasticity
    from ablation_lab.report.sections import ReportInputs

    table = study_table(0.8, 0.55)
    variants = [{"family": "activation", "variant": v, "label": v.upper()} for v in ("relu", "tanh", "linear")]
    figure = tmp_path / "elasticity.png"
    plot_elasticity(table, variants, figure)
    assert figure.stat().st_size > 0
    inputs = ReportInputs(study={"study": "s", "seeds": [1, 2, 3], "dataset": {"name": "d"}}, meta={}, tables={"elasticity": table})
    inputs.figures = {"elasticity": [str(figure)]}
    (section,) = elasticity_section(inputs)
    assert section.id == "elasticity" and len(section.figures) == 1
    texts = " ".join(b.get("text", b.get("html", "")) for b in section.blocks)
    assert "held for relu, tanh" in texts and "activation/linear" in texts and "ari_spectral_kernel" in texts
    assert "verdict (this interval)" in texts
    assert elasticity_section(ReportInputs(study={}, meta={}, tables={})) == []
    empty = pd.DataFrame(columns=["family", "variant", "seed", "run", "metric", "example", "value"])
    (note,) = elasticity_section(ReportInputs(study={}, meta={}, tables={"elasticity": empty}))
    assert note.blocks[0]["text"].startswith("Not analysed")


# --- the config block ---------------------------------------------------------------------------


def test_the_config_block_picks_the_analysed_models_and_names_a_bad_family(test_config):
    from ablation_lab.config import ConfigError
    from ablation_lab.study import Study

    study = Study.from_config(test_config)
    assert [v.id for v in study.analysed("elasticity")] == ["baseline/reference", "activation/relu", "activation/linear", "activation/gp"]
    assert study.probe(study.variants["activation/relu"], "elasticity") == study.probe(study.variants["baseline/reference"], "elasticity")
    assert "elasticity" in study.extra_tables() and "elasticity" in study.extra_figures()
    default = Study.from_config({**test_config, "families": {}, "combinations": [], "elasticity": {"samples": 20}})
    assert [v.id for v in default.analysed("elasticity")] == ["baseline/reference"], "null: the baseline, and activation if declared"
    typo = {**test_config, "elasticity": {"families": ["baseline", "activaton"]}}
    with pytest.raises(ConfigError, match=r"elasticity\.families\[1\]: 'activaton' is not a family of this study"):
        Study.from_config(typo)
    with pytest.raises(ConfigError, match=r"elasticity\.method"):
        Study.from_config({**test_config, "elasticity": {"method": "second_order"}})
    assert "elasticity" not in Study.from_config({k: v for k, v in test_config.items() if k != "elasticity"}).analyses()
    schema = yaml.safe_load((Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert tuple(schema["properties"]["elasticity"]["properties"]["method"]["enum"]) == elasticity.METHODS


# --- any other model (conv layers, batch norm, a model file): full per-example Jacobians ----


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_the_full_jacobian_form_equals_the_factored_form_on_an_mlp(tf, activation):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    model = small_mlp(activation)
    factored, factored_norms = one_step.first_order_changes(one_step.float64_network(model), x, y, 1e-3)
    generic, generic_norms = one_step.keras_first_order_changes(one_step.float64_keras(model), x, y, 1e-3)
    np.testing.assert_allclose(generic, factored, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(generic_norms, factored_norms)


def small_cnn():
    import keras
    from ablation_lab.models.build import build_cnn

    keras.utils.set_random_seed(3)
    cfg = {"filters": [3, 4], "kernel_size": 3, "pooling": "max", "batch_norm": True, "dropout": 0.1, "hidden_units": [6], "activation": "tanh"}  # fmt: skip
    model = build_cnn((6, 6), 3, cfg)
    norm = model.get_layer("norm_1")  # batch norm at inference uses moving statistics: make them non-trivial
    norm.set_weights([w + 0.1 * np.arange(w.size).reshape(w.shape) for w in norm.get_weights()])
    return model


def test_a_cnn_is_stepped_through_full_jacobians_and_they_equal_taking_each_step(tf):
    rng = np.random.default_rng(5)
    x, y = rng.random((8, 6, 6)), rng.integers(0, 3, 8)
    model = small_cnn()
    network = one_step.float64_keras(model)
    np.testing.assert_allclose(network(network.params, tf.constant(x)).numpy(), model.predict(x.astype(np.float32), verbose=0), atol=1e-5)
    errors = {}
    for lr in (1e-6, 1.0):
        first, _ = one_step.keras_first_order_changes(network, x, y, lr)
        exact = one_step.keras_exact_changes(network, x, y, lr, range(len(x)))
        errors[lr] = np.linalg.norm(first - exact) / np.linalg.norm(exact)
    assert errors[1e-6] < 1e-4
    assert errors[1.0] > 100 * errors[1e-6]


def test_the_analysis_runs_on_a_cnn_and_refuses_jacobians_over_the_budget(tf, monkeypatch):
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(3), 20)
    x = rng.random((60, 6, 6)) + y[:, None, None]
    table, arrays = ANALYSES["elasticity"].run(SplitGuard(small_cnn(), x, y), ElasticityParams.of(PARAMS))
    scores = table[table["example"].isna()].set_index("metric")["value"]
    assert 0 <= scores["auc"] <= 1 and scores["first_order_error"] < 0.05
    assert arrays["change_norms"].shape == (30, 30)
    monkeypatch.setattr(one_step, "JACOBIAN_BUDGET", 1000)
    with pytest.raises(one_step.UnsupportedLayer, match=r"elasticity\.samples: 30 examples x 3 classes"):
        elasticity.elasticity_table(small_cnn(), x, y, ElasticityParams.of(PARAMS))
    empty, _ = ANALYSES["elasticity"].run(SplitGuard(small_cnn(), x, y), ElasticityParams.of(PARAMS))
    assert empty.empty
