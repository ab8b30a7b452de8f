"""Recovery after removal (issue 28): budget 0 is the knockout, removed units stay 0, rewind is exact, scores by hand, no test reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import knockout, recovery
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.analyses.recovery import RecoveryParams
from ablation_lab.models import saliency
from ablation_lab.specs import TrainingSpec
from ablation_lab.statistics.intervals import ratio_interval
from ablation_lab.training import masked
from ablation_lab.training.train import configure_tensorflow, train_model
from conftest import quick_training
from scipy import stats

ORDERINGS = ["random", "magnitude_smallest", "activation_lowest", "importance_lowest", "taylor_lowest", "obd_lowest"]
PARAMS = {
    "layer": 1,
    "fractions": [0.25, 0.75],
    "orderings": ORDERINGS,
    "arms": ["finetune", "rewind", "reinit"],
    "steps": [0, 1, 3],
    "epochs": [1],
    "draws": 1,
    "margin": 0.01,
    "units_layer": None,
}
MODEL = {"kind": "mlp", "hidden_units": [16], "activation": "relu", "dropout": 0.0}


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained by the study's own training function, its data and its rebuild function."""
    configure_tensorflow(threads=1)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12))
    data, labels = {}, {}
    for split, n in (("train", 240), ("val", 60), ("test", 90)):
        labels[split] = rng.integers(0, 3, size=n).astype(np.int32)
        data[split] = (centres[labels[split]] + rng.normal(scale=1.5, size=(n, 12))).astype(np.float32)
    arrays = {"x_train": data["train"], "y_train": labels["train"], "x_val": data["val"], "y_val": labels["val"]}
    training = quick_training()
    result = train_model({"model": MODEL, "training": training}, arrays, 3, seed=5)

    def rebuild(seed: int) -> list[np.ndarray]:
        return recovery.initial_variables(MODEL, (12,), 3, seed)

    return result.model, data, labels, training, rebuild


@pytest.fixture(scope="module")
def table(trained):
    model, data, labels, training, rebuild = trained
    return recovery.recovery_table(model, data, labels, training, RecoveryParams.of(PARAMS), 5, rebuild)


def test_budget_zero_fine_tune_equals_the_knockout_accuracy_for_the_same_mask(trained, table):
    model, data, labels, _, _ = trained
    frame, _ = table
    params = {"layers": [1], "fractions": PARAMS["fractions"], "orderings": ORDERINGS[:4], "fills": ["zero"], "draws": 1}
    knocked = knockout.knockout_table(model, data, labels, ["a", "b", "c"], KnockoutParams.of(params), seed=5)
    knocked = knocked[knocked["metric"] == "accuracy"].set_index(["ordering", "fraction"])["value"]
    at_zero = frame.query("metric == 'accuracy' and arm == 'finetune' and steps == 0").set_index(["ordering", "fraction"])["value"]
    for key, value in knocked.items():
        assert at_zero[key] == value, key


def test_removed_units_stay_exactly_zero_after_every_budget(trained, table):
    frame, _ = table
    assert (frame.loc[frame["metric"] == "removed_weights_nonzero", "value"] == 0).all()
    model, data, labels, training, _ = trained
    trainer = masked.MaskedTraining(model, "hidden_1", TrainingSpec.of(training), data["train"], labels["train"])
    keep = np.ones(16, bool)
    keep[[0, 3, 7]] = False
    rows = masked.batch_rows(0, len(labels["train"]), trainer.batch_size, 20)
    start = [v.numpy() for v in model.variables]
    for steps, _ in trainer.run(start, keep, [0, 5, 20], rows, data["test"]):
        kernel = trainer.model.get_layer("hidden_1").kernel.numpy()
        bias = trainer.model.get_layer("hidden_1").bias.numpy()
        outgoing = trainer.model.get_layer("probabilities").kernel.numpy()
        assert not kernel[:, ~keep].any() and not bias[~keep].any() and not outgoing[~keep].any(), steps
        if steps:  # the survivors did train
            assert not np.array_equal(kernel[:, keep], model.get_layer("hidden_1").kernel.numpy()[:, keep])


def test_rewind_recreates_the_initial_weights_training_started_from_to_the_bit(trained, monkeypatch):
    from ablation_lab.training import train

    _model, data, labels, training, rebuild = trained
    seen = {}
    original = train.LOOPS["fast"]

    def spy(model, optimizer, arrays, settings, seed):
        seen["initial"] = [v.numpy().copy() for v in model.variables]
        return original(model, optimizer, arrays, settings, seed)

    monkeypatch.setitem(train.LOOPS, "fast", spy)
    arrays = {"x_train": data["train"], "y_train": labels["train"], "x_val": data["val"], "y_val": labels["val"]}
    train_model({"model": MODEL, "training": training}, arrays, 3, seed=5)
    rebuilt = rebuild(5)
    assert len(rebuilt) == len(seen["initial"])
    for mine, theirs in zip(rebuilt, seen["initial"], strict=True):
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
    assert any(m.tobytes() != t.tobytes() for m, t in zip(rebuild(recovery.fresh_seed(5)), rebuilt, strict=True))
    trainer = masked.MaskedTraining(trained[0], "hidden_1", TrainingSpec.of(training), data["train"], labels["train"])
    keep = np.arange(16) % 4 != 0
    trainer.start(rebuilt, keep)  # the rewind arm at budget 0: survivors exactly at their initial values, removed ones 0
    kernel, initial = trainer.model.get_layer("hidden_1").kernel.numpy(), seen["initial"][0]
    assert kernel[:, keep].tobytes() == initial[:, keep].tobytes() and not kernel[:, ~keep].any()


def test_budgets_run_on_the_way_equal_a_fresh_run_to_each_budget(trained):
    model, data, labels, training, _ = trained
    trainer = masked.MaskedTraining(model, "hidden_1", TrainingSpec.of(training), data["train"], labels["train"])
    keep = np.arange(16) % 3 != 0
    rows = masked.batch_rows(1, len(labels["train"]), trainer.batch_size, 12)
    start = [v.numpy() for v in model.variables]
    on_the_way = dict(trainer.run(start, keep, [0, 4, 12], rows, data["test"]))
    for budget in (4, 12):
        alone = dict(trainer.run(start, keep, [budget], rows, data["test"]))
        np.testing.assert_array_equal(alone[budget], on_the_way[budget])


def test_the_same_seed_gives_the_same_table(trained, table):
    model, data, labels, training, rebuild = trained
    again, _hits = recovery.recovery_table(model, data, labels, training, RecoveryParams.of(PARAMS | {"orderings": ["random"]}), 5, rebuild)
    first = table[0][table[0]["ordering"] == "random"].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.drop(columns="hit_row"), first.drop(columns="hit_row"))


def _tiny():
    import keras
    from ablation_lab.models.build import build_mlp

    keras.utils.set_random_seed(3)
    model = build_mlp((3,), 3, [4], "tanh", 0.0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=10).astype(np.int32)
    return model, x, y


def _by_hand(model, x, y):
    w1, b1 = (v.astype(np.float64) for v in model.get_layer("hidden_1").get_weights())
    w2, b2 = (v.astype(np.float64) for v in model.get_layer("probabilities").get_weights())
    a = np.tanh(x.astype(np.float64) @ w1 + b1)
    z = a @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad_a = (p - np.eye(3)[y]) @ w2.T  # d(-log p_y)/da
    taylor = 0.5 * ((a * grad_a) ** 2).mean(axis=0)
    obd = 0.5 * (w2**2 * ((a**2).T @ (p * (1 - p))) / len(x)).sum(axis=1)
    return a, taylor, obd


def test_taylor_and_obd_scores_match_a_hand_computation():
    from ablation_lab.models.surgery import split_model

    model, x, y = _tiny()
    head = split_model(model, "hidden_1").head
    _, taylor, obd = _by_hand(model, x, y)
    np.testing.assert_allclose(saliency.taylor_scores(model, "hidden_1", head, x, y, chunk=3), taylor, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(saliency.obd_scores(model, "hidden_1", head, x, y, chunk=4), obd, rtol=1e-4, atol=1e-9)


def test_no_score_reads_the_test_split(trained):
    """Scores, masks and the training path see train and val only: a poisoned test split changes only what is predicted."""
    model, data, labels, _training, _rebuild = trained
    from ablation_lab.models.surgery import split_model

    split = split_model(model, "hidden_1")
    clean = recovery.removal_scores(model, "hidden_1", split, data, labels, ORDERINGS)
    poisoned = {**data, "test": np.full_like(data["test"], np.nan)}
    poisoned_labels = {**labels, "test": np.zeros_like(labels["test"])}
    dirty = recovery.removal_scores(model, "hidden_1", split, poisoned, poisoned_labels, ORDERINGS)
    for key, values in clean.items():
        np.testing.assert_array_equal(values, dirty[key])
    assert set(clean) == {"magnitude", "activation", "importance", "taylor", "obd"}


def test_budget_grid_merges_steps_and_epochs_and_always_starts_at_zero():
    assert masked.budget_steps([1, 10], [1, 2], 10) == [(0, "0 steps"), (1, "1 step"), (10, "10 steps"), (20, "2 epochs")]
    assert masked.budget_steps([], [0.5], 8) == [(0, "0 steps"), (4, "0.5 epochs")]


def test_fieller_interval_is_the_inverted_paired_t_test():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.normal(0.3, 0.05, size=4)
        n = d * rng.normal(0.6, 0.1) + rng.normal(0, 0.03, size=4)
        result = ratio_interval(n, d)
        for bound in (result["low"], result["high"]):
            assert stats.ttest_1samp(n - bound * d, 0).pvalue == pytest.approx(0.05, abs=1e-6)
        assert result["low"] < result["estimate"] < result["high"]
    assert np.isnan(ratio_interval([0.1, 0.2, 0.0], [0.01, -0.01, 0.0])["low"])  # denominator not clear of 0


# --- config and workflow ------------------------------------------------------------------

BAD_RECOVERY = [
    ({"layer": 3}, "recovery.layer: layer 3, but the model has 1 hidden layers"),
    ({"layer": "hidden_9"}, "recovery.layer: 'hidden_9' is not a knock-out-able layer"),
    ({"families": ["nope"]}, "recovery.families[0]: 'nope' is not a family of this study"),
    ({"arms": ["warm"]}, "recovery.arms[0]"),
    ({"fractions": [1.0]}, "recovery.fractions[0]"),
    ({"orderings": ["largest"]}, "recovery.orderings[0]"),
    ({"budget": 3}, "recovery"),
]


@pytest.mark.parametrize(("block", "fragment"), BAD_RECOVERY, ids=[str(b) for b, _ in BAD_RECOVERY])
def test_a_bad_recovery_block_is_refused_in_one_line_naming_the_key(test_config, block, fragment):
    from ablation_lab.config import ConfigError
    from ablation_lab.study import Study

    with pytest.raises(ConfigError) as caught:
        Study.from_config(test_config | {"recovery": block})
    assert "\n" not in str(caught.value) and fragment in str(caught.value)


def test_recovery_is_off_by_default_and_the_preset_plans_one_job_per_model(root):
    from ablation_lab.config import load_config_file
    from ablation_lab.study import Study

    default = load_config_file(root / "config" / "config.yaml")
    assert recovery.recovery_params(default) is None and not Study.from_config(default).analysis_params().get("recovery")
    preset = load_config_file(root / "config" / "recovery.yaml")
    params = recovery.recovery_params(preset)
    assert params["units_layer"] == 1 and params["margin"] == preset["equivalence_margin"]
    assert set(params) >= set(recovery.KEYS)


@pytest.mark.workflow
def test_a_recovery_study_runs_and_reports_the_section(tmp_path):
    from workflow_helpers import snakemake, write_config

    config = {
        "study": "recovery-smoke",
        "seeds": [1, 2],
        "dataset": {"name": "digits", "validation_fraction": 0.2, "test_fraction": 0.25, "split_seed": 42},
        "model": {"hidden_units": [16], "activation": "relu", "dropout": 0.0},
        "training": {"epochs": 2, "batch_size": 64, "early_stopping_patience": 0},
        "posthoc": {"fractions": [0.5, 0.75], "orderings": ["random"], "draws": 1, "families": ["baseline"]},
        "recovery": {"fractions": [0.5], "orderings": ["random", "taylor_lowest"], "steps": [0, 2], "epochs": [1]},
    }
    snakemake(tmp_path, write_config(tmp_path, config), "--cores", "2")
    page = (tmp_path / "reports" / "recovery-smoke" / "report.html").read_text()
    assert 'id="recovery"' in page and "How fast does the network compensate?" in page
    shares = pd.read_csv(tmp_path / "reports" / "recovery-smoke" / "tables" / "recovery_share.csv")
    assert shares["retrained"].notna().all() and set(shares["arm"]) == {"finetune", "rewind", "reinit"}
    table = pd.read_csv(tmp_path / "reports" / "recovery-smoke" / "tables" / "recovery.csv")
    assert (table.loc[table["metric"] == "removed_weights_nonzero", "value"] == 0).all()


def test_one_trace_serves_every_mask_arm_and_budget(trained):
    model, data, labels, training, rebuild = trained
    trainer = masked.MaskedTraining(model, "hidden_1", TrainingSpec.of(training), data["train"], labels["train"])
    rows = masked.batch_rows(2, len(labels["train"]), trainer.batch_size, 9)
    for start in ([v.numpy() for v in model.variables], rebuild(5)):
        for keep in np.random.default_rng(0).random((3, 16)) > 0.5:
            list(trainer.run(start, keep, [0, 1, 4, 9], rows, data["test"]))
    assert trainer._train.experimental_get_tracing_count() == 1


def _study(with_units: bool = True):
    """A fake study: baseline recovery rows for 3 seeds, 2 budgets, 2 arms, 2 criteria, and the units retrain runs."""
    from ablation_lab.analyses.base import StudyTables

    rng = np.random.default_rng(1)
    rows, arrays = [], {}
    for seed in (1, 2, 3):
        hits = []
        for ordering in ("random", "taylor_lowest"):
            for arm in ("rewind", "reinit", "finetune"):
                for steps, budget in ((0, "0 steps"), (10, "1 epoch")):
                    right = rng.random(50) < (0.5 if steps == 0 and arm == "finetune" else 0.2 if steps == 0 else 0.8)
                    rows.append(
                        {"family": "baseline", "variant": "reference", "seed": seed, "layer": "hidden_1", "ordering": ordering}
                        | {"draw": 0, "fraction": 0.5, "arm": arm, "steps": steps, "budget": budget, "metric": "accuracy"}
                        | {"value": right.mean(), "hit_row": len(hits)}
                    )
                    hits.append(right)
        arrays["baseline", "reference", seed] = {"hits": np.array(hits)}
    runs = pd.DataFrame({"family": "units", "variant": "frac-0.5", "seed": [1, 2, 3], "accuracy": [0.9, 0.92, 0.88]})
    variants = [{"family": "units", "variant": "frac-0.5", "coords": {"fraction removed": 0.5}}] if with_units else []
    params = {"orderings": ["random", "taylor_lowest"], "margin": 0.01, "units_layer": 1}
    return StudyTables(pd.DataFrame(rows), arrays, runs, {}, variants, params)


def test_the_recovered_share_is_the_paired_ratio_and_comparisons_are_holm_adjusted_together():
    from ablation_lab.analyses.recovery import ANALYSIS
    from ablation_lab.statistics.inference import holm

    study = _study()
    out = ANALYSIS.summarise(study)
    table = study.table.set_index(["ordering", "arm", "steps", "seed"])["value"].sort_index()
    share = out["recovery_share"].set_index(["ordering", "arm", "steps"]).loc[("random", "finetune", 10)]
    posthoc = table.loc[("random", "finetune", 0)]
    numerator, denominator = table.loc[("random", "finetune", 10)] - posthoc, pd.Series([0.9, 0.92, 0.88], index=[1, 2, 3]) - posthoc
    assert share["share"] == pytest.approx(numerator.mean() / denominator.mean())
    expected = ratio_interval(numerator, denominator)
    assert (share["low"], share["high"]) == pytest.approx((expected["low"], expected["high"]))
    compared = out["recovery_comparisons"]
    assert set(compared["comparison"]) == {"rewind - re-initialise", "taylor_lowest - random"} and len(compared) == 4
    np.testing.assert_allclose(compared["p_holm"], holm(compared["p_value"]))
    assert ((compared["holm_low"] > 0) | (compared["holm_high"] < 0) == (compared["p_holm"] < 0.05)).all()
    reach = out["recovery_reach"]
    assert set(reach.columns) >= {"reaches 50% (mean)", "reaches 90% (95% low end)"}


def test_without_a_units_retrain_variant_the_share_is_absent_and_says_so():
    from ablation_lab.analyses.recovery import ANALYSIS

    shares = ANALYSIS.summarise(_study(with_units=False))["recovery_share"]
    assert shares["share"].isna().all() and shares["method"].str.startswith("absent").all()


def test_a_dropout_models_fine_tune_arm_is_the_same_whatever_the_process_drew_before(trained):
    """A loaded model's dropout seed state is the loading process's draw; the finetune arm sets it from the run's seed."""
    import keras
    from ablation_lab.models.build import build_mlp

    _, data, labels, training, _ = trained
    keras.utils.set_random_seed(0)
    weights = build_mlp((12,), 3, [16], "relu", 0.5).get_weights()
    params = {**PARAMS, "orderings": ["magnitude_smallest"], "arms": ["finetune"], "steps": [5], "epochs": []}
    tables = []
    for noise in (1, 2):
        keras.utils.set_random_seed(noise)
        model = build_mlp((12,), 3, [16], "relu", 0.5)
        model.set_weights([w if w.dtype == np.int64 else weights[k] for k, w in enumerate(model.get_weights())])
        tables.append(recovery.recovery_table(model, data, labels, training, RecoveryParams.of(params), 5, None))
    pd.testing.assert_frame_equal(tables[0][0], tables[1][0])
    np.testing.assert_array_equal(tables[0][1]["hits"], tables[1][1]["hits"])
