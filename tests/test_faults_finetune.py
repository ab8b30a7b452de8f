"""Fault-aware fine-tuning (issue 29's last mitigation arm): held faults stay faulty, 0 steps change nothing, it recovers."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import faults
from ablation_lab.analyses.faults import FaultsParams
from ablation_lab.config import ConfigError
from ablation_lab.models import fault_injection as fi
from ablation_lab.specs import TrainingSpec
from ablation_lab.training import masked
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model
from conftest import SavedModelContext, quick_training

MODEL = {"kind": "mlp", "hidden_units": [16], "activation": "relu", "dropout": 0.0}
PARAMS = {
    "models": ["bit_flip", "stuck_at_1", "zero"],
    "counts": [40],
    "bit": None,
    "bits": [],
    "injections": 3,
    "layers": [],
    "activation_layers": [],
    "clip": False,
    "margin": 0.01,
    "seed": 0,
    "finetune": {"steps": 60, "maps": 2},
}


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained by the study's own training function on separable blobs, and its splits."""
    configure_tensorflow(threads=1)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12)) * 2
    data, labels = {}, {}
    for split, n in (("train", 300), ("val", 60), ("test", 150)):
        labels[split] = rng.integers(0, 3, size=n).astype(np.int32)
        data[split] = (centres[labels[split]] + rng.normal(scale=1.0, size=(n, 12))).astype(np.float32)
    arrays = {"x_train": data["train"], "y_train": labels["train"], "x_val": data["val"], "y_val": labels["val"]}
    training = quick_training()
    return train_model({"model": MODEL, "training": training}, arrays, 3, seed=5).model, data, labels, training


def table(trained, params):
    model, data, labels, training = trained
    return faults.faults_table(model, data["test"], labels["test"], FaultsParams.of(params), 5, data["train"], labels["train"], training)


def test_a_zero_fault_map_fine_tuned_for_0_steps_reproduces_the_clean_predictions(trained):
    model, data, labels, training = trained
    injector = fi.WeightFaults(model, fi.weight_layers(model))
    trainer = masked.MaskedTraining(model, None, TrainingSpec.of(training), data["train"], labels["train"], held=injector.layers)
    trainer.start([v.numpy() for v in model.variables], held=faults.held_kernels(injector, faults.empty_map()))
    trainer.train(masked.batch_rows(5, len(labels["train"]), trainer.batch_size, 0))
    clean = predict_proba(model, data["test"])
    np.testing.assert_array_equal(trainer.outputs(data["test"]).argmax(axis=1), clean.argmax(axis=1))
    # and in the campaign: at 0 steps every fine-tuned map scores exactly as the same map unfine-tuned
    frame = table(trained, {**PARAMS, "finetune": {"steps": 0, "maps": 2}})
    keys = ["sweep", "fault", "count", "injection"]
    tuned = frame[frame["arm"] == "finetune"].set_index(keys)[["correct", "sdc", "nonfinite"]]
    plain = frame[(frame["arm"] == "none") & (frame["target"] == "all")].set_index(keys)[["correct", "sdc", "nonfinite"]]
    pd.testing.assert_frame_equal(tuned, plain.loc[tuned.index])
    assert set(tuned.index.get_level_values("fault")) == {"none", "stuck_at_1", "zero"}  # the flip is transient: not tuned
    assert (tuned.index.get_level_values("injection") < 2).all()


@pytest.mark.parametrize("steps", [1, 7, 40])
def test_faulted_weights_hold_their_faulty_values_bit_for_bit_after_any_number_of_steps(trained, steps):
    model, data, labels, training = trained
    injector = fi.WeightFaults(model, fi.weight_layers(model))
    fault_map = injector.draw("stuck_at_1", 30, np.random.default_rng(steps), None)
    trainer = masked.MaskedTraining(model, None, TrainingSpec.of(training), data["train"], labels["train"], held=injector.layers)
    trainer.start([v.numpy() for v in model.variables], held=faults.held_kernels(injector, fault_map))
    trainer.train(masked.batch_rows(5, len(labels["train"]), trainer.batch_size, steps))
    for k, name in enumerate(injector.layers):
        kernel = np.asarray(trainer.model.get_layer(name).kernel.numpy(), np.float32).reshape(-1)
        chosen = fault_map.kernel == k
        assert kernel[fault_map.index[chosen]].view(np.uint32).tolist() == fault_map.values[chosen].view(np.uint32).tolist()
        others = np.setdiff1d(np.arange(kernel.size), fault_map.index[chosen])
        assert not np.array_equal(kernel[others], injector.originals[k].reshape(-1)[others])  # the rest did train
    assert trainer.held_entries_changed() == 0
    assert injector.intact()  # the trainer works on its own copy: the live model is untouched


def test_fine_tuning_leaves_the_saved_model_file_and_the_loaded_model_alone(trained, tmp_path):
    model, data, labels, training = trained
    path = tmp_path / "model.keras"
    model.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    context = SavedModelContext(path, data, labels, training, seed=5)
    before = [np.asarray(w).tobytes() for w in context.model.get_weights()]
    first = faults.faults_run(context, FaultsParams.of(PARAMS))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert [np.asarray(w).tobytes() for w in context.model.get_weights()] == before
    pd.testing.assert_frame_equal(
        first, faults.faults_run(SavedModelContext(path, data, labels, training, seed=5), FaultsParams.of(PARAMS))
    )  # seeded


def test_fine_tuning_around_a_damaging_fault_map_lowers_its_sdc_rate(trained):
    """44 of the 48 output weights zeroed: the map hurts; 60 steps around it must win most of it back."""
    frame = table(trained, {**PARAMS, "models": ["zero"], "counts": [44], "layers": ["probabilities"]})
    grid = frame[(frame["sweep"] == "grid") & (frame["target"] == "all") & (frame["injection"] < 2)]
    faulty, tuned = (grid[grid["arm"] == arm].set_index("injection") for arm in ("none", "finetune"))
    assert (faulty["sdc"] > 0.1 * faulty["clean_correct"]).all()  # the fault map does real damage
    assert (tuned["sdc"] < 0.5 * faulty["sdc"]).all()
    assert (tuned["correct"] > faulty["correct"]).all()
    drift = frame[(frame["arm"] == "finetune") & (frame["sweep"] == "clean")]
    assert len(drift) == 1 and drift["nonfinite"].iat[0] == 0


def test_the_recovered_share_is_paired_by_seed_and_a_finetune_without_a_permanent_fault_is_refused(trained):
    frames = []
    for seed in (1, 2, 3):
        model, data, labels, training = trained
        part = faults.faults_table(model, data["test"], labels["test"], FaultsParams.of({**PARAMS, "counts": [44], "layers": ["probabilities"]}), seed, data["train"],
                                   labels["train"], training)  # fmt: skip
        frames.append(part.assign(family="baseline", variant="baseline", seed=seed))
    shares = faults.finetune_table(pd.concat(frames, ignore_index=True))
    assert set(shares["fault"]) == {"stuck_at_1", "zero"} and (shares["seeds"] == 3).all() and (shares["maps"] == 6).all()
    zero = shares[shares["fault"] == "zero"].iloc[0]
    assert zero["accuracy_faulty"] < zero["accuracy_finetuned"] <= zero["accuracy_clean"] + 0.05
    expected = (zero["accuracy_finetuned"] - zero["accuracy_faulty"]) / (zero["accuracy_clean"] - zero["accuracy_faulty"])
    assert zero["accuracy_recovered"] == pytest.approx(expected)  # a ratio of the seeds' means
    assert 0 < zero["sdc_removed"] <= 1 and zero["maps_nonfinite"] == 0
    assert zero["accuracy_clean_finetuned"] >= zero["accuracy_clean"] - 0.05  # the clean model fine-tuned alike: the drift
    from ablation_lab.analyses.fault_report import finetune_blocks

    shown = str(finetune_blocks(shares, FaultsParams.of(PARAMS)))
    assert "Fault-aware fine-tuning (Zhang et al. 2018): the first 2 fault maps" in shown and "60 steps" in shown
    assert f"{zero['accuracy_recovered']:.3f} [" in shown and finetune_blocks(pd.DataFrame(), FaultsParams.of(PARAMS)) == []
    with pytest.raises(ConfigError, match=r"^invalid study config: faults.finetune: faults.models has no permanent fault model"):
        faults.faults_params({"faults": {**PARAMS, "models": ["bit_flip", "random_value"], "families": ["baseline"]}})
    off = faults.faults_params({"faults": {**PARAMS, "finetune": None, "families": ["baseline"]}})
    assert "finetune" not in off  # off: the probe's params (its file name) as before the arm existed


def test_a_dropout_model_fine_tunes_to_the_same_numbers_whatever_the_process_drew_before(trained):
    """Dropout masks come from the model's seed generator state, set from the run's seed, not from a global RNG."""
    import keras
    from ablation_lab.models.build import build_mlp

    _, data, labels, training = trained
    keras.utils.set_random_seed(0)
    weights = build_mlp((12,), 3, [16], "relu", 0.5).get_weights()
    outputs, unseeded, frames = [], [], []
    for noise in (1, 2):
        keras.utils.set_random_seed(noise)  # what an earlier job in the same worker may have left
        model = build_mlp((12,), 3, [16], "relu", 0.5)
        model.set_weights([w if w.dtype == np.int64 else weights[k] for k, w in enumerate(model.get_weights())])  # not the seed state
        injector = fi.WeightFaults(model, fi.weight_layers(model))
        trainer = masked.MaskedTraining(model, None, TrainingSpec.of(training), data["train"], labels["train"], held=injector.layers)
        rows = masked.batch_rows(5, len(labels["train"]), trainer.batch_size, 20)
        for out, start in ((outputs, masked.seeded_dropout(model, [v.numpy() for v in model.variables], 5)), (unseeded, None)):
            trainer.start(start or [v.numpy() for v in model.variables], held=faults.held_kernels(injector, faults.empty_map()))
            trainer.train(rows)
            out.append(trainer.outputs(data["test"]))
        params = {**PARAMS, "models": ["zero"], "finetune": {"steps": 20, "maps": 1}}
        frames.append(
            faults.faults_table(model, data["test"], labels["test"], FaultsParams.of(params), 5, data["train"], labels["train"], training)
        )
    np.testing.assert_array_equal(*outputs)
    assert not np.array_equal(*unseeded)  # the process's own draw would have changed the masks
    pd.testing.assert_frame_equal(*frames)


def test_a_typo_in_faults_layers_or_families_is_refused_at_plan_time():
    from ablation_lab.study import Study

    study = {"study": "s", "seeds": [1], "dataset": {"name": "digits"}, "model": {"hidden_units": [8]}}
    with pytest.raises(ConfigError, match=r"faults.activation_layers\[0\]: 'hiden_1' is not a knock-out-able layer .*available: hidden_1"):
        Study.from_config({**study, "faults": {"activation_layers": ["hiden_1"]}})
    with pytest.raises(ConfigError, match=r"faults.families\[1\]: 'dropuot' is not a family of this study"):
        Study.from_config({**study, "faults": {"families": ["baseline", "dropuot"]}})
    assert "faults" in Study.from_config({**study, "faults": {"activation_layers": ["hidden_1"]}}).analyses()
