"""Typed specs: a run's training settings read once, the defaults from the schema alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ablation_lab.config import load_config_file
from ablation_lab.identity import canonical_training
from ablation_lab.specs import TrainingSpec, schema_defaults
from conftest import quick_training

ROOT = Path(__file__).resolve().parents[1]


def test_a_key_the_canonical_spec_leaves_out_comes_back_from_the_schema():
    settings = quick_training()  # no keep_best: a run named before the key existed
    spec = TrainingSpec.of(canonical_training(settings))
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert spec.keep_best == schema["properties"]["training"]["properties"]["keep_best"]["default"]
    assert spec.as_dict() == schema_defaults("training") | settings


def test_every_training_key_of_the_schema_is_a_field_and_has_a_default():
    assert set(TrainingSpec.__dataclass_fields__) == set(schema_defaults("training"))


def test_a_misspelt_key_is_named():
    with pytest.raises(ValueError, match=re.escape("training.epoch: not a training setting")):
        TrainingSpec.of({"epoch": 3})


def test_a_spec_is_frozen_and_read_as_is():
    spec = TrainingSpec.of({})
    assert TrainingSpec.of(spec) is spec
    with pytest.raises(AttributeError):
        spec.epochs = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("keep_best", "monitored", "better"), [("val_loss", "val_loss", 0), ("val_accuracy", "val_accuracy", 1), ("last", "val_loss", 0)]
)
def test_the_kept_epoch_is_judged_on_validation_only(keep_best, monitored, better):
    spec = TrainingSpec.of({"keep_best": keep_best})
    rows = [
        {"val_loss": 0.2, "val_accuracy": 0.8, "loss": 9.0, "accuracy": 0.0},
        {"val_loss": 0.3, "val_accuracy": 0.9, "loss": 0.0, "accuracy": 1.0},
    ]
    assert spec.monitored == monitored
    assert max(range(2), key=lambda i: spec.kept_epoch_score()(rows[i])) == better


def test_a_data_key_without_the_image_keys_reads_them_at_their_defaults():
    from ablation_lab.data.datasets import identity_of
    from ablation_lab.specs import DataSpec

    study = {**schema_defaults("dataset"), "name": "csv", "path": "table.csv"}
    key = identity_of(study)
    assert "color_mode" not in key and "image_size" not in key  # a csv study's data key (pinned names)
    assert DataSpec.of(key) == DataSpec.of(study)
    assert DataSpec.of({"name": "images", "path": "x", "image_size": [8, 6]}).image_size == (8, 6)
    assert set(DataSpec.__dataclass_fields__) == set(schema_defaults("dataset"))


def test_per_kind_model_defaults_are_written_in_the_schema_alone():
    from ablation_lab.models.settings import kind_defaults, learnable_defaults

    assert kind_defaults("cnn") == {"filters": [16, 32], "kernel_size": 3, "pooling": "max", "batch_norm": False}
    assert kind_defaults("resnet") == {"filters": [16, 32], "blocks": 3, "kernel_size": 3, "batch_norm": True}
    assert kind_defaults("mlp") == {}
    assert learnable_defaults() == {"control_points": 21, "grid_range": [-3.0, 3.0], "length_scale": None, "init": "relu"}
    code = "\n".join(path.read_text() for path in (ROOT / "workflow" / "ablation_lab").rglob("*.py"))
    assert not re.search(r"\{\s*\"filters\": \[16, 32\]", code), "a per-kind default written in code again"


def test_every_model_key_of_the_schema_is_a_field_of_the_model_spec():
    from ablation_lab.config import load_schema
    from ablation_lab.specs import ModelSpec

    keys = set(load_schema()["properties"]["model"]["properties"])
    identity_only = {"sha256", "builder_sha256"}  # digests a canonical spec adds, so an edited file retrains
    assert set(ModelSpec.__dataclass_fields__) == keys | identity_only


@pytest.mark.parametrize(
    "preset", ["config.yaml", "full.yaml", "test.yaml", "kst.yaml", "nsdropout.yaml", "resnet.yaml", "self_repair_cnn.yaml"]
)
def test_every_run_of_a_preset_reads_into_a_model_spec_that_keeps_its_settings(preset):
    from ablation_lab.specs import ModelSpec
    from ablation_lab.study import Study

    study = Study.from_config(load_config_file(ROOT / "config" / preset))
    for variant in study.variants.values():
        model = study.run_spec(variant)["model"]
        spec = ModelSpec.of(model)
        for key, value in model.items():
            read = getattr(spec, key)
            expected = tuple(value) if isinstance(value, list) else value
            assert read == expected or (key == "dropout" and read == float(value)), (variant.id, key)


def test_an_absent_model_key_means_what_the_schema_says():
    from ablation_lab.config import schema_absent
    from ablation_lab.specs import ModelSpec

    assert schema_absent("model") == {"kind": "mlp", "weights": "retrain", "dropout_kind": "standard", "nsdropout_interval": 1}
    spec = ModelSpec.of({})
    assert (spec.kind, spec.hidden_units, spec.activation, spec.dropout) == ("mlp", (128,), "relu", 0.0)
    assert ModelSpec.of({"kind": "resnet"}).resnet_widths() == ([16, 32, 32], [16, 32, 32])
    assert ModelSpec.of({"kind": "file", "path": "m.keras"}).activation is None  # the file's own, unless a variant swaps it
    code = "\n".join(path.read_text() for path in (ROOT / "workflow" / "ablation_lab").rglob("*.py"))
    repeated = re.findall(r"\.get\(\"(?:kind|weights|dropout_kind|nsdropout_interval)\", (?:\"[^\"]*\"|\d+)\)", code)
    assert not repeated, f"what an absent model key means, written in code again (read specs.ModelSpec): {repeated}"


def test_a_misspelt_model_key_is_named():
    from ablation_lab.specs import ModelSpec

    with pytest.raises(ValueError, match=re.escape("model.hiden_units: not a model setting")):
        ModelSpec.of({"hiden_units": [3]})


PRESETS = ("config.yaml", "full.yaml", "test.yaml")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_analysis_gets_its_parameters_typed_and_they_read_back_as_the_probes_identity(preset):
    """The registry's loop, no analysis named: `params(config)` (a probe's identity) as its `params_type` and back."""
    from ablation_lab.analyses.base import Params
    from ablation_lab.analyses.registry import ANALYSES
    from ablation_lab.config import load_config_file

    config = load_config_file(ROOT / "config" / preset)
    for analysis in ANALYSES.values():
        params = analysis.params(config)
        if params is None or analysis.params_type is None:
            continue
        typed = analysis.typed(params)
        assert isinstance(typed, Params) and analysis.typed(typed) is typed
        assert analysis.config_key == analysis.params_type.config_key
        assert {key: value for key, value in typed.as_dict().items() if key in params} == params
        with pytest.raises(ValueError, match="not a"):
            analysis.params_type.of({**params, "misspelt": 1})


def test_a_key_an_analysis_leaves_out_comes_from_its_schema_block_nested_or_not():
    """Every field that its block (dotted for a nested one) gives a default comes back at that default."""
    from dataclasses import fields as fields_of

    from ablation_lab.analyses.registry import ANALYSES

    for analysis in ANALYSES.values():
        if analysis.params_type is None or analysis.config_key is None:
            continue
        defaults = schema_defaults(analysis.config_key)
        fields = {field.name for field in fields_of(analysis.params_type)}
        given = {name: None for name in fields - set(defaults)}  # what only the study gives (the margin)
        typed = analysis.params_type.of(given)
        assert all(getattr(typed, name) == defaults[name] for name in fields & set(defaults))
