"""Fault injection: exact bit arithmetic, exact restoration, known consequences, exact intervals, the report section."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import faults
from ablation_lab.analyses.faults import FaultsParams
from ablation_lab.models import fault_injection as fi
from ablation_lab.statistics.inference import clopper_pearson, clustered_clopper_pearson
from ablation_lab.training.train import configure_tensorflow, predict_proba
from conftest import SavedModelContext
from scipy import stats

PARAMS = {
    "models": ["bit_flip", "stuck_at_1", "zero", "random_value"],
    "counts": [1, 10],
    "bit": None,
    "bits": [0, 23, 30, 31],
    "injections": 3,
    "layers": [],
    "activation_layers": ["hidden_1"],
    "clip": True,
    "margin": 0.01,
    "seed": 0,
}


@pytest.fixture(scope="module")
def model_and_data():
    import keras
    from ablation_lab.models.build import build_mlp

    configure_tensorflow(threads=1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = {split: rng.random((n, 12)).astype(np.float32) for split, n in (("train", 200), ("test", 80))}
    labels = {split: rng.integers(0, 3, size=len(x)).astype(np.int32) for split, x in data.items()}
    return build_mlp((12,), 3, [16], "relu", 0.0), data, labels


def words(model) -> list[bytes]:
    return [np.asarray(w, np.float32).tobytes() for w in model.get_weights()]


def test_flipping_the_sign_bit_changes_exactly_that_weights_sign():
    values = np.array([[0.5, -1.25], [3.0, 0.0]], dtype=np.float32)
    flipped = values.copy()
    fi.flip_bit(flipped, (0, 1), 31)
    assert flipped[0, 1] == 1.25
    changed = flipped.view(np.uint32) != values.view(np.uint32)
    assert changed.sum() == 1 and changed[0, 1]
    assert fi.faulty_words(np.array([2.0, -0.0]), "bit_flip", np.array([31, 31])).tolist() == [-2.0, 0.0]
    assert fi.faulty_words(np.array([1.0]), "stuck_at_0", np.array([29]))[0] == np.float32(1.0) / 2**64  # exponent 127 -> 63
    assert fi.faulty_words(np.array([1.0]), "stuck_at_1", np.array([29]))[0] == 1.0  # already 1: unchanged
    assert fi.faulty_words(np.array([0.75]), "zero", np.array([-1]))[0] == 0.0


def test_flipping_the_same_bits_twice_restores_the_model_bit_for_bit(model_and_data):
    model, _, _ = model_and_data
    before = words(model)
    injector = fi.WeightFaults(model, fi.weight_layers(model))
    fault_map = injector.draw("bit_flip", 25, np.random.default_rng(1))
    injector.apply(fault_map)
    assert words(model) != before
    twice = fi.FaultMap(fault_map.kernel, fault_map.index, fi.faulty_words(fault_map.values, "bit_flip", fault_map.bits), fault_map.bits)
    injector.apply(twice)  # the flipped words flipped again
    assert words(model) == before and injector.intact()
    for fault in fi.FAULT_MODELS:  # and restore() after any fault
        with injector.injected(injector.draw(fault, 40, np.random.default_rng(2))):
            pass
        assert words(model) == before


def test_zero_faults_reproduce_the_clean_predictions_exactly(model_and_data):
    model, data, _ = model_and_data
    clean = predict_proba(model, data["test"])
    injector = fi.WeightFaults(model, fi.weight_layers(model))
    run = fi.forward(model)
    with injector.injected(faults.empty_map()):
        np.testing.assert_array_equal(run(data["test"]), clean)
    assert injector.draw("zero", 0, np.random.default_rng(0)).index.size == 0


@pytest.mark.parametrize(("hidden", "activation"), [([16], "relu"), ([32, 16], "tanh")])
def test_the_packed_scorer_gives_the_outputs_of_applying_each_map_bit_for_bit(model_and_data, hidden, activation, monkeypatch):
    """MapScorer's shortcuts (clean layer inputs reused, faulty kernel columns of many maps in one
    matmul, chunks of examples, blocks of maps) must change no bit of any output, clipped or not."""
    import keras
    from ablation_lab.models import fault_batch
    from ablation_lab.models.build import build_mlp
    from ablation_lab.models.fault_batch import MapScorer

    monkeypatch.setattr(fault_batch, "MAPS_PER_BLOCK", 50)

    _, data, _ = model_and_data
    keras.utils.set_random_seed(1)
    model = build_mlp((12,), 3, hidden, activation, 0.0)
    injector = fi.WeightFaults(model, fi.weight_layers(model))
    last = len(injector.layers) - 1
    maps = [
        injector.draw(fault, count, np.random.default_rng(seed), None, targets)
        for seed in range(3)
        for fault in fi.FAULT_MODELS
        for count in (0, 1, 10)
        for targets in (None, [0], [last])
    ]
    for bounds in (None, fi.clip_bounds(model, data["train"])):
        run = fi.forward(model, bounds)
        expected = []
        for fault_map in maps:
            with injector.injected(fault_map):
                expected.append(run(data["test"]))
        got = list(MapScorer(model, injector, bounds, chunk=32).outputs(data["test"], maps))
        assert [a.view(np.uint32).tobytes() for a in got] == [e.view(np.uint32).tobytes() for e in expected]
        assert injector.intact()


def test_the_top_exponent_bit_of_an_output_weight_blows_up_its_class(model_and_data):
    model, data, _ = model_and_data
    hidden = fi.forward(model.__class__(model.inputs, model.get_layer("hidden_1").output))(data["test"])
    kernel = model.get_layer("probabilities").kernel.numpy()
    unit, target = np.argwhere((kernel > 0) & (kernel < 1))[0]  # a positive weight |w| < 2: bit 30 is 0, flipping it x 2^128
    injector = fi.WeightFaults(model, ["probabilities"])
    index = np.ravel_multi_index((unit, target), kernel.shape)
    value = fi.faulty_words(kernel[unit, target : target + 1], "bit_flip", np.array([30]))
    assert value[0] == kernel[unit, target] * np.float32(2.0**64) * np.float32(2.0**64)
    fault_map = fi.FaultMap(np.array([0]), np.array([index]), value, np.array([30]))
    with injector.injected(fault_map):
        out = fi.forward(model)(data["test"])
    active = hidden[:, unit] > 0
    assert active.any()
    finite = np.isfinite(out).all(axis=1)
    # a firing unit feeds a logit of ~1e37 or Inf: that class wins outright, or softmax gives NaN
    assert np.all(~finite[active] | (out[active].argmax(axis=1) == target))
    np.testing.assert_array_equal(out[~active], predict_proba(model, data["test"])[~active])


def test_exact_intervals_match_scipy():
    for k, n in ((0, 20), (3, 20), (20, 20), (417, 1000)):
        expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson(k, n) == (pytest.approx(expected.low), pytest.approx(expected.high))
    # clusters that vary as independent trials would (or less) give the plain exact interval on the pooled counts
    pooled = clustered_clopper_pearson([5, 5, 5, 5], [50, 50, 50, 50])
    low, high = clopper_pearson(20, 200)
    assert (pooled["estimate"], pooled["low"], pooled["high"], pooled["n_eff"]) == (0.1, pytest.approx(low), pytest.approx(high), 200)
    # all-or-nothing maps count as about one trial each (m - 1: the unbiased variance between clusters): much wider
    lumpy = clustered_clopper_pearson([50, 0, 0, 0], [50, 50, 50, 50])
    assert lumpy["n_eff"] == pytest.approx(3.0) and lumpy["high"] - lumpy["low"] > 0.5


def test_the_campaign_leaves_the_model_file_alone_and_is_reproducible(model_and_data, tmp_path):
    model, data, labels = model_and_data
    path = tmp_path / "model.keras"
    model.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    context = SavedModelContext(path, data, labels)
    first = faults.faults_run(context, FaultsParams.of(PARAMS))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert words(context.model) == words(model)  # restored in memory too
    second = faults.faults_run(SavedModelContext(path, data, labels), FaultsParams.of(PARAMS))
    pd.testing.assert_frame_equal(first, second)
    other = faults.faults_run(SavedModelContext(path, data, labels), FaultsParams.of({**PARAMS, "seed": 5}))
    assert not first.equals(other)
    clean = first[first["sweep"] == "clean"]
    assert set(clean["arm"]) == {"none", "clip"} and (clean["sdc"] == 0).all()
    # two kernels: every grid cell over both, and over each alone
    assert set(first["target"]) == {"all", "hidden_1", "probabilities"}
    assert len(first[first["sweep"] == "bits"]) == 2 * len(PARAMS["bits"]) * PARAMS["injections"]
    activations = first[first["sweep"] == "activations"]
    assert set(activations["target"]) == {"hidden_1"} and set(activations["fault"]) == {"bit_flip", "stuck_at_1", "zero"}
    assert set(activations["count"]) == {1, 10}


def test_weight_faults_run_on_a_residual_network(tmp_path):
    from ablation_lab.identity import canonical_model
    from ablation_lab.models.build import build_model

    configure_tensorflow(threads=1)
    spec = canonical_model({"kind": "resnet", "blocks": 2, "filters": [2, 4], "activation": "relu", "dropout": 0.0})
    model = build_model(spec, (8, 8), 3)
    path = tmp_path / "resnet.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    data = {split: rng.random((n, 8, 8)).astype(np.float32) for split, n in (("train", 20), ("test", 30))}
    labels = {split: rng.integers(0, 3, size=len(x)).astype(np.int32) for split, x in data.items()}
    table = faults.faults_run(SavedModelContext(path, data, labels), FaultsParams.of({**PARAMS, "activation_layers": [], "clip": False}))
    assert "block_2_shortcut" in set(table["target"]) and "activations" not in set(table["sweep"])


def test_activation_faults_touch_exactly_count_entries_of_every_example():
    rng = np.random.default_rng(0)
    activations = rng.random((50, 16)).astype(np.float32) + 0.5  # no zeros: every flip shows
    faulty = fi.faulty_activations(activations, "bit_flip", 3, np.random.default_rng(1), bit=31)
    changed = faulty != activations
    assert (changed.sum(axis=1) == 3).all() and (faulty[changed] == -activations[changed]).all()
    again = fi.faulty_activations(activations, "bit_flip", 3, np.random.default_rng(1), bit=31)
    np.testing.assert_array_equal(faulty, again)  # seeded
    assert (fi.faulty_activations(activations, "zero", 99, rng) == 0).all()  # capped at the layer's size
    with pytest.raises(ValueError, match="random_value"):
        fi.faulty_activations(activations, "random_value", 1, rng)


def test_clipping_ranges_come_from_the_training_split_only(model_and_data):
    model, data, _ = model_and_data
    bounds = fi.clip_bounds(model, data["train"])
    hidden = fi.forward(model.__class__(model.inputs, model.get_layer("hidden_1").output))(data["train"])
    np.testing.assert_array_equal(bounds["hidden_1"][1], hidden.max(axis=0))
    clipped = fi.forward(model, bounds)
    np.testing.assert_allclose(clipped(data["train"]), predict_proba(model, data["train"]), rtol=1e-6)  # within range: no change


def test_unknown_layer_names_are_one_line_errors(model_and_data):
    model, _, _ = model_and_data
    with pytest.raises(
        ValueError, match=r"faults.layers: 'nope' is not a Dense/Conv layer of this model \(available: hidden_1, probabilities\)"
    ):
        faults.chosen_weight_layers(model, ["nope"])


@pytest.mark.parametrize(
    "model_cfg",
    [
        {"hidden_units": [6, 5], "activation": "relu", "dropout": 0.0},
        {"hidden_units": [6], "activation": "slaf-poly2", "dropout": 0.0},
        {"kind": "cnn", "filters": [2, 3], "hidden_units": [4], "activation": "relu", "dropout": 0.0},
        {"kind": "resnet", "blocks": 3, "filters": [2, 4], "activation": "relu", "dropout": 0.0},
    ],
    ids=["mlp", "learnable", "cnn", "resnet"],
)
def test_the_plan_time_kernel_list_is_the_built_models(model_cfg):
    from ablation_lab.identity import canonical_model
    from ablation_lab.models.build import build_model
    from ablation_lab.models.surgery import built_in_weight_layers

    spec = canonical_model(model_cfg)
    assert sorted(built_in_weight_layers(spec)) == sorted(fi.weight_layers(build_model(spec, (8, 8), 3)))


def test_a_faults_layer_the_model_lacks_is_refused_at_plan_time(test_config):
    from ablation_lab.config import ConfigError, validate_config
    from ablation_lab.study import Study

    config = {**test_config, "faults": {"layers": ["hidden_1", "hiden_2"]}}
    with pytest.raises(
        ConfigError, match=r"^invalid study config: faults.layers\[1\]: 'hiden_2' is not a Dense/Conv layer .*probabilities\)$"
    ):
        _ = Study.from_config(validate_config(config)).families


def synthetic_table() -> pd.DataFrame:
    """A campaign table of a baseline and a dropout variant, 3 seeds: the dropout one has half the SDCs."""
    rows = []
    for family, variant, sdc in (("baseline", "reference", 20), ("dropout", "rate-0.5", 10)):
        for seed in (1, 2, 3):
            for arm in ("none", "clip"):
                common = {"family": family, "variant": variant, "seed": seed, "run": f"r{seed}", "arm": arm, "examples": 100}
                common["clean_correct"] = 90
                rows.append(
                    common
                    | {"sweep": "clean", "target": "all", "fault": "none", "bit": -1, "count": 0, "injection": 0}
                    | {"weights": 0, "correct": 90, "sdc": 0, "nonfinite": 0}
                )
                for injection in range(4):
                    cell = {
                        "sweep": "grid",
                        "target": "all",
                        "fault": "bit_flip",
                        "bit": -1,
                        "count": 10,
                        "injection": injection,
                        "weights": 1000,
                    }
                    rows.append(common | cell | {"correct": 90 - sdc, "sdc": sdc + seed + (arm == "clip") * -5, "nonfinite": 1})
                    bit = {
                        "sweep": "bits",
                        "target": "all",
                        "fault": "bit_flip",
                        "bit": 30,
                        "count": 1,
                        "injection": injection,
                        "weights": 1000,
                    }
                    rows.append(common | bit | {"correct": 60, "sdc": 30, "nonfinite": 5})
    return pd.DataFrame(rows)


def test_the_study_summaries_and_the_report_section():
    from ablation_lab.analyses.base import StudyTables
    from ablation_lab.report.page import render
    from ablation_lab.report.sections import ReportInputs

    table = synthetic_table()
    summaries = faults.ANALYSIS.summarise(StudyTables(table, {}, pd.DataFrame(), {}, [], {"margin": 0.01}))
    summary = summaries["faults_summary"].set_index(["family", "arm", "sweep"])
    row = summary.loc[("baseline", "none", "grid")]
    assert row["sdc_rate"] == pytest.approx((20 * 12 + 4 * 6) / (90 * 12))
    assert row["sdc_rate_low"] < row["sdc_rate"] < row["sdc_rate_high"]
    compared = summaries["faults_comparisons"]
    assert len(compared) == 1 and compared["difference"].iat[0] == pytest.approx(-10 / 90) and compared["diff_ci_high"].iat[0] < 0
    assert summaries["faults_mitigation"]["difference"].tolist() == pytest.approx([-5 / 90, -5 / 90])
    summary_rows = pd.DataFrame(
        [{"family": "baseline", "variant": "reference", "label": "baseline", "order": 0, "seeds": 3, "diverged": 0}]
    )
    tables = {
        "summary": summary_rows.assign(accuracy_mean=0.9, accuracy_ci_low=0.8, accuracy_ci_high=1.0),
        "comparisons": pd.DataFrame(columns=["family", "variant", "difference", "diff_ci_low", "diff_ci_high", "p_holm"]),
        "runs": pd.DataFrame([{"family": "baseline", "variant": "reference", "seed": 1, "run": "r1", "status": "ok"}]),
        "findings": pd.DataFrame(columns=["claim", "estimate", "ci_low", "ci_high", "seeds", "verdict", "detail"]),
        **summaries,
    }
    study = {"study": "s", "seeds": [1, 2, 3], "dataset": {"name": "csv"}, "faults": PARAMS}
    page = render(ReportInputs(study=study, meta={"sizes": {"test": 100}}, tables=tables))
    assert '<section id="faults">' in page and "Fault tolerance" in page
    assert "SDC rate (silent data corruption)" in page and "Clopper-Pearson" in page and "Ranger-style" in page
    assert "Maps failing" in page and "maps 1.00 [" in page  # every bit-30 map of the synthetic campaign failed
