"""Run identity and paths: what shares a trained model, what never collides, what names what."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from ablation_lab import TRAINING_CODE_VERSION, identity
from ablation_lab import study as paths
from ablation_lab.ablations import FAMILIES
from ablation_lab.analyses.nsdropout import MODES
from ablation_lab.analyses.registry import ANALYSES
from ablation_lab.data.datasets import LOADERS
from ablation_lab.models.build import ACTIVATIONS
from ablation_lab.study import Study
from conftest import ROOT

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def article_config(posthoc: bool = False) -> dict:
    """The default study pinned to the article's setup (its four activations, 2 seeds); without
    its `posthoc` block, the article's four retrain families alone."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["seeds"] = [1, 2]
    config["families"]["activation"]["functions"] = ["relu", "sigmoid", "tanh", "linear"]
    return config if posthoc else {k: v for k, v in config.items() if k not in ("posthoc", "calibration", "elasticity")}


@pytest.fixture(scope="module")
def article() -> Study:
    return Study.from_config(article_config())


def test_the_posthoc_block_adds_width_retrains_and_test_time_counterparts():
    study = Study.from_config(article_config(posthoc=True))
    assert len(study.variants) == 23 + 10 + 7 + 6
    assert len(study.runs) == 20 + 9, "units/frac-0 is the baseline; the test-time variants train nothing"
    assert study.variants["units/frac-0.5"].model == {"hidden_units": [64]}
    posthoc = study.variants["input_posthoc/cols-08-11"]
    assert study.run_of(posthoc) == study.run_of(study.variants["baseline/reference"])
    assert study.test_view(posthoc)[0]["apply_to"] == "test"
    knocked = {(row["family"], row["variant"]) for row in study.probe_table() if row["analysis"] == "knockout"}
    assert knocked == {("baseline", "reference")} | {("dropout", f"rate-{r}") for r in ("0", "0.2", "0.4", "0.6", "0.8")}


def test_default_study_trains_twenty_distinct_models_for_twenty_three_variants(article):
    assert len(article.variants) == 23
    assert len(article.runs) == 20
    assert len(article.training_files()) == 40
    baseline = article.run_of(article.variants["baseline/reference"])
    shared = article.sharing()[baseline]
    assert set(shared) == {"baseline/reference", "dropout/rate-0", "activation/relu", "noise/gauss-0"}


def test_run_names_are_readable_and_match_the_wildcards(article):
    for run in article.runs:
        assert re.fullmatch(paths.WILDCARDS["run"], run), run
    assert re.fullmatch(paths.WILDCARDS["data"], article.data_key)
    assert article.run_of(article.variants["baseline/reference"]).startswith("relu-128-")
    assert article.run_of(article.variants["dropout/rate-0.2"]).startswith("relu-128-drop0.2-")
    assert article.run_of(article.variants["noise/gauss-0.3"]).startswith("relu-128__gauss0.3-")
    assert article.run_of(article.variants["input/cols-08-11"]).startswith("relu-128__cols08-11-")


def test_changing_one_variant_changes_only_its_run(test_config):
    del test_config["families"]["nsdropout"]  # its dropout-0.5 shares dropout/rate-0.5's run
    before = Study.from_config(test_config)
    test_config["families"]["dropout"]["rates"] = [0.0, 0.3]
    after = Study.from_config(test_config)
    assert set(before.runs) - set(after.runs) == {before.run_of(before.variants[v]) for v in ("dropout/rate-0.5",)} | {
        before.run_of(before.variants[v]) for v in ("noise-x-dropout/gauss-0.3__rate-0.5",)
    }
    assert before.run_of(before.variants["noise/gauss-0.3"]) == after.run_of(after.variants["noise/gauss-0.3"])


def test_run_spec_holds_what_determines_the_model_and_nothing_else(test_config):
    study = Study.from_config(test_config)
    spec = study.runs[study.run_of(study.variants["baseline/reference"])]
    assert spec == {
        "model": {"hidden_units": [16], "activation": "relu", "dropout": 0},
        "training": {key: value for key, value in study.config["training"].items() if key != "keep_best"},  # at its default
        "transforms": [],
        "code_version": TRAINING_CODE_VERSION,
    }


def test_integral_floats_and_no_op_transforms_do_not_make_runs_differ(test_config):
    as_ints = copy.deepcopy(test_config)
    as_ints["model"]["dropout"] = 0
    as_ints["training"]["learning_rate"] = 0.001
    test_config["training"]["learning_rate"] = 0.001
    one, other = Study.from_config(test_config), Study.from_config(as_ints)
    assert one.runs.keys() == other.runs.keys()
    assert one.run_of(one.variants["noise/gauss-0"]) == one.run_of(one.variants["baseline/reference"])
    assert one.run_of(one.variants["noise-x-dropout/gauss-0__rate-0.5"]) == one.run_of(one.variants["dropout/rate-0.5"])


def test_test_only_noise_reuses_the_clean_model_and_evaluates_differently(test_config):
    test_config["families"]["noise"]["apply_to"] = ["both", "test"]
    study = Study.from_config(test_config)
    clean, noisy = study.variants["baseline/reference"], study.variants["noise/gauss-0.3-testonly"]
    assert study.run_of(noisy) == study.run_of(clean)
    assert study.probe(noisy).name.startswith("gauss0.3-test-") and study.probe(clean).name.startswith("clean-")
    assert study.probe_file(noisy, 1) != study.probe_file(clean, 1)
    assert study.probe_spec("evaluation", study.probe(noisy).name)["view"] == [dict(noisy.transforms[0])]
    assert study.run_of(study.variants["noise/gauss-0.3"]) != study.run_of(clean)


def test_two_studies_share_exactly_the_runs_they_agree_on(test_config):
    other = copy.deepcopy(test_config)
    other["study"] = "other"
    other["training"]["epochs"] = 2
    one, two = Study.from_config(test_config), Study.from_config(other)
    assert one.data_key == two.data_key
    assert not set(one.runs) & set(two.runs)
    other["training"]["epochs"] = test_config["training"].get("epochs", 5)
    assert set(Study.from_config(other).runs) == set(one.runs)


def test_split_settings_and_data_file_content_key_the_prepared_data(tmp_path, test_config):
    table = tmp_path / "data.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    config = {**test_config, "dataset": {"name": "csv", "path": str(table)}, "families": {}, "combinations": []}
    first = Study.from_config(config).data_key
    assert Study.from_config(config).data_key == first
    table.write_text(table.read_text() + "99,1,0\n")
    edited = Study.from_config(config).data_key
    assert edited != first
    config["dataset"]["split_seed"] = 7
    assert Study.from_config(config).data_key not in {first, edited}


def test_every_path_of_a_study_comes_from_the_study(article):
    variant = article.variants["dropout/rate-0.2"]
    run_dir = article.run_dir(variant, 1)
    assert run_dir == f"results/{article.data_key}/{article.run_of(variant)}/seed1"
    assert article.probe_file(variant, 1).startswith(run_dir + "/evaluation/clean-")
    assert paths.run_file("model", article.data_key, article.run_of(variant), 1) == run_dir + "/model.keras"
    assert article.report_file() == "reports/article/report.html"
    assert len(article.probe_table()) == 23 * 2 * len(article.analyses())


def test_schema_enums_match_the_registries():
    properties = SCHEMA["properties"]
    assert set(properties["families"]["properties"]) == set(FAMILIES)
    assert set(properties["dataset"]["properties"]["name"]["enum"]) == set(LOADERS)
    assert tuple(properties["model"]["properties"]["activation"]["enum"]) == ACTIVATIONS
    functions = properties["families"]["properties"]["activation"]["properties"]["functions"]["items"]["enum"]
    assert tuple(functions) == ACTIVATIONS
    assert next(iter(ANALYSES)) == "evaluation"
    for analysis in ANALYSES.values():
        node = {"properties": properties}
        for key in (analysis.config_key or "").split(".") if analysis.config_key else []:
            assert key in node["properties"], f"{analysis.name}: {analysis.config_key}"
            node = node["properties"][key]
    modes = properties["families"]["properties"]["nsdropout"]["properties"]["modes"]
    assert tuple(modes["items"]["enum"]) == tuple(modes["default"]) == MODES


def test_every_activation_is_known_to_keras():
    import keras
    from ablation_lab.identity import LEARNABLE_ACTIVATIONS

    for name in ACTIVATIONS:
        if name not in LEARNABLE_ACTIVATIONS:  # those are layers (ablation_lab/models/layers.py), tested in test_learnable.py
            assert callable(keras.activations.get(name))


def test_readable_names_survive_any_transform():
    mask = {"op": "mask", "region": {"axis": "patches", "row": 7, "col": 14, "size": 7}, "fill": "mean"}
    assert identity.describe_transform(mask) == "patch-r07-c14-s07-mean"
    assert identity.describe_transform({"op": "drop_features", "indices": [3, 5]}) == "drop2f-3"
    spec = {"model": {"hidden_units": [8] * 40, "activation": "relu", "dropout": 0.1}, "transforms": [mask] * 10}
    name = identity.run_name(spec)
    assert len(name) <= identity.MAX_READABLE + 1 + identity.RUN_DIGEST
    assert re.fullmatch(paths.WILDCARDS["run"], name)


def test_each_analysis_figure_is_filed_under_its_analysis_in_the_snakemake_report(test_config):
    study = paths.Study.from_config(test_config)
    categories = {name: study.figure_category(name) for name in study.extra_figures()}
    assert categories.pop("learning_curves") == "Training"
    assert categories and set(categories.values()) <= {analysis.title for analysis in ANALYSES.values()}
    assert categories["knockout"] == ANALYSES["knockout"].title
