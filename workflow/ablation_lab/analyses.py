"""Per-model analyses: a trained model (or its saved predictions), its split and spec -> a tidy table.

Every capability that looks at one trained model (test-set evaluation, calibration,
post-hoc knockout, local elasticity) is one function registered in ANALYSES. The
workflow runs one cached job per (analysis, run, seed, probe), where a probe is the analysis
with its parameters under one test view (the test-time-only transforms of a variant, e.g.
noise added to the test split of a model trained clean), and the study's aggregation joins
the tables. Adding one: a function `(RunContext, params) -> DataFrame` (or `(DataFrame,
{name: per-example array})`, saved beside the table as .npz), an `Analysis` entry
below, a schema entry if it takes parameters, and a report section.

Importing this module never imports TensorFlow; `RunContext.model` does, on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.identity import LEARNABLE_ACTIVATIONS
from ablation_lab.io import read_json

log = logging.getLogger("ablation_lab")

EVALUATION = "evaluation"


@dataclass
class RunContext:
    """One trained model of a run, the split it was trained on, and the test view to analyse.

    Everything is loaded lazily: an analysis that needs only the saved probabilities never
    pays for TensorFlow or the model file.
    """

    run_dir: Path
    split_file: str
    meta_file: str
    spec: dict[str, Any]
    seed: int
    view: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def provenance(self) -> dict[str, Any]:
        return read_json(self.run_dir / "provenance.json")

    def checked(self, kind: str, name: str) -> Path:
        """A file of the run, after checking it against the digest its training job recorded."""
        from ablation_lab.io import check_digest

        path = self.run_dir / name
        check_digest(path, self.provenance.get("digests", {}).get(kind), "train")
        return path

    @cached_property
    def saved(self) -> dict[str, np.ndarray]:
        """The probabilities the training job saved (validation and test, training view)."""
        with np.load(self.checked("predictions", "predictions.npz")) as archive:
            return {key: archive[key] for key in archive.files}

    @cached_property
    def split(self) -> Any:
        from ablation_lab.data import load_split

        return load_split(self.split_file, self.meta_file)

    @cached_property
    def model(self) -> Any:
        from ablation_lab.models import load_model

        return load_model(str(self.checked("model", "model.keras")))

    @cached_property
    def fill_statistics(self) -> dict[str, Any]:
        """Training-split statistics the transforms fill and clip with (computed once, not per split)."""
        from ablation_lab.ablations import fill_statistics

        return fill_statistics(self.split.x("train"))

    @property
    def class_names(self) -> list[str]:
        return list(self.split.meta["class_names"])

    def labels(self, split: str = "test") -> np.ndarray:
        return self.saved[f"y_{split}"]

    def inputs(self, split: str = "test") -> np.ndarray:
        """A split as the model sees it: its training transforms, then (test only) the view's."""
        from ablation_lab.ablations import transform_split

        transforms = self.spec["transforms"] + (self.view if split == "test" else [])
        return transform_split(self.split.x(split), split, transforms, self.seed, self.fill_statistics)

    def probabilities(self, split: str = "test") -> np.ndarray:
        """Class probabilities on a split: saved ones when the view adds nothing, else predicted."""
        if split != "test" or not self.view:
            return self.saved[f"probabilities_{split}"]
        from ablation_lab.train import predict_proba

        return predict_proba(self.model, self.inputs(split))


@dataclass(frozen=True)
class Analysis:
    """A registered per-model analysis.

    `params(config)` reads the study config (its `config_key` block, if it has one): the
    analysis's parameters (part of each probe's identity), or None when the study does not
    ask for it. `uses_test_view`: the analysis runs once per variant test view (evaluation
    does); otherwise once per trained model.
    """

    name: str
    title: str
    description: str
    run: Callable[[RunContext, dict[str, Any]], pd.DataFrame | tuple[pd.DataFrame, dict[str, np.ndarray]]]
    params: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    uses_test_view: bool = False
    config_key: str | None = None  # the config block holding its parameters, if any (dotted: "families.nsdropout")
    modules: tuple[str, ...] = ("analyses", "evaluate", "ablations")  # its code: an edit reruns its jobs
    wants: Callable[[Mapping[str, Any], str], bool] = lambda config, family: True  # which families' models
    # (joined table, (family, variant, seed) -> saved arrays) -> the study-level `<name>_summary` table
    summarise: Callable[[pd.DataFrame, dict[tuple[str, str, int], dict[str, np.ndarray]]], pd.DataFrame] | None = None


def evaluate_run(context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Test-set accuracy, error rate, loss and macro F1 (+ epochs, seconds), one row per metric.

    Also the predicted class of every test example under the view: the statistics pair
    variants example by example (a bootstrap over the test split) from them.
    """
    from ablation_lab.evaluate import classification_metrics, metrics_table

    record = context.provenance
    probabilities = context.probabilities("test")
    metrics = classification_metrics(context.labels("test"), probabilities)
    metrics |= {"epochs_trained": record["epochs_trained"], "train_seconds": record["train_seconds"]}
    if record["diverged_epoch"] is not None:
        metrics["diverged_epoch"] = record["diverged_epoch"]
    predicted = probabilities.argmax(axis=1).astype(np.int32)
    return metrics_table(metrics, {"status": record["status"]}), {"predicted": predicted, "y_test": context.labels("test")}


def always(config: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def knockout_run(context: RunContext, params: dict[str, Any]) -> pd.DataFrame:
    """Post-hoc unit (conv: channel) knockout curves of one trained model (see ablation_lab/knockout.py).

    The study checked `posthoc.layers` names against a built-in model's baseline, so a
    variant that lacks one (a shallower capacity variant) skips it; any other model's layer
    names are only known here, and an unknown one is an error."""
    from ablation_lab.knockout import knockout_table

    inputs = {split: context.inputs(split) for split in ("train", "val", "test")}
    labels = {"train": context.split.y("train"), "val": context.labels("val"), "test": context.labels("test")}
    built_in = context.spec["model"].get("kind", "mlp") in ("mlp", "kst", "cnn")
    return knockout_table(context.model, inputs, labels, context.class_names, params, context.seed, skip_missing=built_in)


def calibrate_run(context: RunContext, params: dict[str, Any]) -> pd.DataFrame:
    """Calibration of the model's test probabilities under the view; temperature fitted on validation."""
    from ablation_lab.calibration import calibration_metrics, reliability_bins

    val, test = context.probabilities("val"), context.probabilities("test")
    metrics = calibration_metrics(val, context.labels("val"), test, context.labels("test"), params["bins"])
    rows = [{"bin": np.nan, "metric": name, "value": value} for name, value in metrics.items()]
    if np.all(np.isfinite(test)):
        for bin_row in reliability_bins(test, context.labels("test"), params["bins"]).itertuples():
            for name in ("count", "confidence", "accuracy"):
                rows.append({"bin": bin_row.bin, "metric": f"bin_{name}", "value": float(getattr(bin_row, name))})
    return pd.DataFrame(rows, columns=["bin", "metric", "value"])


def calibration_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("calibration")
    return {"bins": block["bins"]} if block else None


KNOCKOUT_KEYS = ("layers", "fractions", "orderings", "fills", "draws")


def posthoc_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("posthoc")
    return {key: block[key] for key in KNOCKOUT_KEYS} if block else None


def posthoc_families(config: Mapping[str, Any], family: str) -> bool:
    return family in config["posthoc"]["families"]


def nsdropout_run(context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """NSDropout's inference modes and mask dependence on the test split (see ablation_lab/nsdropout.py)."""
    from ablation_lab.nsdropout import nsdropout_table

    table, arrays = nsdropout_table(context.model, context.inputs("test"), context.labels("test"), params["modes"])
    model = context.spec["model"]
    table.insert(0, "layer", model.get("dropout_kind", "standard") if float(model.get("dropout", 0)) else "none")
    table.insert(1, "rate", float(model.get("dropout", 0)))
    return table, arrays


def nsdropout_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config["families"].get("nsdropout")
    return {"modes": list(block["modes"])} if block else None


def nsdropout_summary(table: pd.DataFrame, arrays: dict[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:
    from ablation_lab.nsdropout import summarise_modes

    return summarise_modes(table, arrays)


def shapes_run(context: RunContext, params: dict[str, Any]) -> pd.DataFrame:
    """The learned activation functions of one trained model (empty for fixed activations)."""
    from ablation_lab.learnable import SHAPE_COLUMNS, learned_shapes

    if context.spec["model"].get("activation") not in LEARNABLE_ACTIVATIONS:
        return pd.DataFrame(columns=SHAPE_COLUMNS)
    return learned_shapes(context.model, params["points"], params["units_shown"], context.split.meta.get("feature_names"))


def shapes_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Asked for whenever the study has a learnable activation, in the baseline or the activation family."""
    named = {config["model"].get("activation"), *config["families"].get("activation", {}).get("functions", [])}
    return {"points": 121, "units_shown": 4} if named & set(LEARNABLE_ACTIVATIONS) else None


def elasticity_run(context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Local elasticity of one trained model on a stratified sample of the test split (see ablation_lab/elasticity.py).

    The model's own inputs (its training transforms applied to the test split), no test view.
    """
    from ablation_lab.elasticity import COLUMNS, UnsupportedLayer, elasticity_table

    try:
        return elasticity_table(context.model, context.inputs("test"), context.labels("test"), params)
    except UnsupportedLayer as error:  # a model too large for full Jacobians: the log says how large, the report says so
        log.warning("%s", error)
        return pd.DataFrame(columns=COLUMNS), {}


ELASTICITY_KEYS = ("samples", "learning_rate", "seed", "method", "check_rows")


def elasticity_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("elasticity")
    return {key: block[key] for key in ELASTICITY_KEYS} if block else None


ELASTICITY_FAMILIES = ("baseline", "activation")  # analysed when `elasticity.families` is null


def elasticity_families(config: Mapping[str, Any], family: str) -> bool:
    return family in (config["elasticity"]["families"] or ELASTICITY_FAMILIES)


ANALYSES: dict[str, Analysis] = {
    EVALUATION: Analysis(
        EVALUATION,
        "Test-set evaluation",
        "Accuracy, error rate, cross-entropy and macro F1 on the test split, under the variant's test view.",
        evaluate_run,
        always,
        uses_test_view=True,
    ),
    "calibration": Analysis(
        "calibration",
        "Calibration",
        "ECE, KS calibration error, Brier score and NLL on the test split under the variant's view; temperature fitted on validation.",
        calibrate_run,
        calibration_params,
        uses_test_view=True,
        config_key="calibration",
        modules=("analyses", "calibration", "ablations"),
    ),
    "knockout": Analysis(
        "knockout",
        "Post-hoc knockout",
        "A fraction of a hidden layer's units removed from the trained model, no retraining; accuracy on the test split.",
        knockout_run,
        posthoc_params,
        config_key="posthoc",
        modules=("analyses", "knockout", "ablations"),
        wants=posthoc_families,
    ),
    "nsdropout": Analysis(
        "nsdropout",
        "NSDropout inference modes",
        "Every trained model of the nsdropout family on the test split under each inference mode, and how far its prediction follows a wrong class's mask.",
        nsdropout_run,
        nsdropout_params,
        config_key="families.nsdropout",
        modules=("analyses", "nsdropout", "layers", "ablations"),
        wants=lambda config, family: family == "nsdropout",
        summarise=nsdropout_summary,
    ),
    "activation_shapes": Analysis(
        "activation_shapes",
        "Learned activation shapes",
        "Each learnable activation layer's function on a grid of inputs, learned and as initialised.",
        shapes_run,
        shapes_params,
        modules=("analyses", "learnable", "layers"),
        wants=lambda config, family: family in ("baseline", "activation"),
    ),
    "elasticity": Analysis(
        "elasticity",
        "Local elasticity",
        "How one SGD step on a test example moves the model's output at other test examples of its class and of others (He & Su, 2020).",
        elasticity_run,
        elasticity_params,
        config_key="elasticity",
        modules=("analyses", "elasticity", "layers", "ablations"),  # layers: the learnable activations' functions
        wants=elasticity_families,
    ),
}


def run_analysis(name: str, context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The analysis's tidy table, and its per-example arrays (empty for most analyses)."""
    result = ANALYSES[name].run(context, params)
    return result if isinstance(result, tuple) else (result, {})
