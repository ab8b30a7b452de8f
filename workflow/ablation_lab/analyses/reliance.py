"""Reliance on single directions (Morcos, Barrett, Rabinowitz & Botvinick, ICLR 2018), measured here.

Per trained model, for each chosen hidden layer: the cumulative-ablation curve (units removed
in random order, zero fill, several draws; accuracy on the test split) and its area; the same
curve with as many random orthogonal directions of the layer's activation space removed
instead of units (the rotation control: equal curves mean the units carry no privileged
basis); each unit's class selectivity and its single-unit importance (overall and per class)
on the validation split; and the model's generalisation gap, train accuracy on the labels it
was trained on (corrupted, for the `labels` family) minus test accuracy.

Across the study's models (`summarise`): Spearman's rank correlation of area and gap, within
the label-noise family and across all families, and of selectivity and importance, each with
a bootstrap interval over models and seeds (statistics/inference.py); the unit-minus-direction
area difference with its equivalence verdict. The test split only ever scores: selectivity and
importance are fitted on validation, nothing is fitted on test. The report's section and
figures are in `reliance_report.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext, StudyTables
from ablation_lab.analyses.knockout import curve_area, keep_masks
from ablation_lab.analyses.reliance_report import figures, plot, reliance_section
from ablation_lab.models.surgery import chosen_layers, class_selectivity, masked_predictions, random_rotation, split_model
from ablation_lab.report.sections import ReportInputs, SectionContent

COLUMNS = ["layer", "basis", "draw", "fraction", "unit", "metric", "value"]


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from ablation_lab.training.train import predict_proba

    return float((predict_proba(model, x).argmax(axis=1) == y).mean())


def unit_rows(layer: str, activations: np.ndarray, labels: np.ndarray, split: Any, classes: list[str]) -> list[dict]:
    """Per unit, on the validation split: selectivity, preferred class, importance (accuracy drop
    when it alone is removed, zero fill) and the drop of each class's accuracy."""
    units = activations.shape[-1]
    selectivity, preferred = class_selectivity(activations, labels, len(classes))
    zero = np.zeros(units, np.float32)
    hits = masked_predictions(split, activations, ~np.eye(units, dtype=bool), zero) == labels[None]
    intact = split.tail(activations).argmax(axis=1) == labels
    rows = []
    for unit in range(units):
        base = {"layer": layer, "basis": "unit", "draw": 0, "fraction": np.nan, "unit": unit}
        rows.append({**base, "metric": "selectivity", "value": float(selectivity[unit])})
        rows.append({**base, "metric": "preferred_class", "value": float(preferred[unit])})
        rows.append({**base, "metric": "importance", "value": float(intact.mean() - hits[unit].mean())})
        for index, name in enumerate(classes):
            chosen = labels == index
            if chosen.any():
                drop = float(intact[chosen].mean() - hits[unit, chosen].mean())
                rows.append({**base, "metric": f"class_drop:{name}", "value": drop})
    return rows


def curve_rows(layer: str, split: Any, activations: np.ndarray, labels: np.ndarray, params: RelianceParams, seed: int) -> list[dict]:
    """Cumulative ablation in random order, zero fill: units, and (rotation) random orthogonal directions."""
    units, fractions, rows = activations.shape[-1], list(params.fractions), []
    zero = np.zeros(units, np.float32)
    for draw in range(params.draws):
        rng = np.random.default_rng(np.random.SeedSequence([seed, params.seed, 31, draw]))
        masks = keep_masks(rng.permutation(units), fractions)
        bases = {"unit": None} | ({"direction": random_rotation(units, rng)} if params.rotation else {})
        for name, basis in bases.items():
            curve = (masked_predictions(split, activations, masks, zero, basis) == labels[None]).mean(axis=1)
            base = {"layer": layer, "basis": name, "draw": draw, "unit": np.nan}
            rows += [{**base, "fraction": f, "metric": "accuracy", "value": float(a)} for f, a in zip(fractions, curve, strict=True)]
            area = curve_area(fractions, curve)
            rows.append({**base, "fraction": np.nan, "metric": "area", "value": area})
            intact = curve[int(np.argmin(fractions))]  # the least removed: 0 is the intact model
            rows.append({**base, "fraction": np.nan, "metric": "area_normalised", "value": area / intact if intact > 0 else np.nan})
    return rows


def reliance_table(
    model: Any, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: list[str], params: RelianceParams, seed: int
) -> pd.DataFrame:
    """Every reliance measure of one trained model; `labels["train"]` are the labels it was trained on.

    The curves are scored on `params.split`: train (the labels the model was trained on,
    corrupted or not: every model starts near 1 and falls towards chance, as in the paper) or
    test. Selectivity and importance are always measured on validation."""
    train, test = accuracy(model, inputs["train"], labels["train"]), accuracy(model, inputs["test"], labels["test"])
    base = {"layer": "", "basis": "", "draw": 0, "fraction": np.nan, "unit": np.nan}
    rows = [
        {**base, "metric": "train_accuracy", "value": train},
        {**base, "metric": "test_accuracy", "value": test},
        {**base, "metric": "generalisation_gap", "value": train - test},
    ]
    for layer in chosen_layers(model, params.layers, skip_missing=True):
        split = split_model(model, layer)
        chosen = params.split
        rows += curve_rows(layer, split, split.head(inputs[chosen]), labels[chosen], params, seed)
        rows += unit_rows(layer, split.head(inputs["val"]), labels["val"], split, classes)
    return pd.DataFrame(rows, columns=COLUMNS)


def reliance_run(context: RunContext, params: RelianceParams) -> pd.DataFrame:
    from ablation_lab.ablations import training_labels

    classes = context.class_names
    y_train = training_labels(context.split.y("train"), context.spec["transforms"], context.seed, len(classes))
    inputs = {split: context.inputs(split) for split in ("train", "val", "test")}
    labels = {"train": y_train, "val": context.labels("val"), "test": context.labels("test")}
    return reliance_table(context.model, inputs, labels, classes, params, context.seed)


@dataclass(frozen=True)
class RelianceParams(Params):
    """How reliance on single units is measured and judged (the `reliance` block)."""

    config_key = "reliance"

    layers: list[int | str]  # hidden layers (1-based) or layer names; empty: every hidden layer
    split: str  # where the ablation curves are scored: `train` or `test`
    fractions: list[float]  # shares of units (or directions) removed, one curve point each
    draws: int  # random orders per curve
    rotation: bool  # also remove random orthogonal directions, not only units
    families: list[str] | None  # whose models it sees (None: every family)
    bootstrap: int  # resamples of each correlation's interval
    correlation_margin: float  # a correlation within +-margin counts as none
    area_margin: float  # an area difference within +-margin counts as none
    seed: int  # seeds the draws and the bootstrap


KEYS = tuple(field.name for field in fields(RelianceParams))  # its probe's identity: these keys, in this order


def reliance_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("reliance")
    return {key: block[key] for key in KEYS} if block else None


def reliance_chain_only(config: Mapping[str, Any]) -> list[str]:
    """Reliance cuts the model into the layers before and after each point (each layer takes the previous one's output)."""
    return ["reliance"]


def reliance_check(config: Mapping[str, Any]) -> None:
    """`reliance.layers` names layers this model has: a typo is one line at plan time, not an error in every job."""
    from ablation_lab import checks

    checks.check_posthoc_layers(config["reliance"], config["model"], "reliance.layers")


def reliance_families(config: Mapping[str, Any], family: str) -> bool:
    chosen = config["reliance"]["families"]
    return chosen is None or family in chosen


# --- study level --------------------------------------------------------------------------


def label_noise(variant: Mapping[str, Any]) -> float:
    return float(sum(t.get("rate", 0.0) for t in variant.get("transforms", []) if t["op"] == "corrupt_labels"))


def models_table(table: pd.DataFrame, variants: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (variant, seed, layer): unit and direction areas (mean over draws), gap and accuracies."""
    keys = ["family", "variant", "seed", "run"]
    runs = table[table["layer"].isna() | (table["layer"] == "")].pivot_table(index=keys, columns="metric", values="value").reset_index()
    areas = table[table["metric"].isin(["area", "area_normalised"])]
    areas = areas.pivot_table(index=[*keys, "layer"], columns=["metric", "basis"], values="value")
    areas.columns = [f"{metric}_{basis}".replace("area_normalised", "normalised_area") for metric, basis in areas.columns]
    areas = areas.reset_index()
    out = areas.merge(runs, on=keys, how="left")
    noise = {(v["family"], v["variant"]): label_noise(v) for v in variants}
    dropout = {(v["family"], v["variant"]): float(v.get("coords", {}).get("dropout rate", 0.0)) for v in variants}
    out["label_noise"] = [noise.get(k, 0.0) for k in zip(out["family"], out["variant"], strict=True)]
    out["dropout"] = [dropout.get(k, 0.0) for k in zip(out["family"], out["variant"], strict=True)]
    return out


def units_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed, layer, unit): selectivity, preferred class, importance, class drops."""
    chosen = table[table["unit"].notna() & (table["metric"] != "accuracy")]
    index = ["family", "variant", "seed", "run", "layer", "unit"]
    return chosen.pivot_table(index=index, columns="metric", values="value").reset_index()


def distinct(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """One row per trained model (variants sharing a run, such as label noise 0 and the baseline, count once)."""
    return frame.drop_duplicates(["run", "seed", *keys])


def correlation_rows(models: pd.DataFrame, units: pd.DataFrame, params: RelianceParams, classes: list[str]) -> list[dict]:
    from ablation_lab.statistics.intervals import spearman_interval

    def one(test: str, scope: str, layer: str, frame: pd.DataFrame, x: str, y: str) -> dict:
        found = spearman_interval(frame[x], frame[y], frame["run"], frame["seed"], n_boot=params.bootstrap, seed=params.seed)
        return {"test": test, "scope": scope, "layer": layer, **found}

    rows = []
    models, units = distinct(models, "layer"), distinct(units, "layer", "unit")
    for layer, block in models.groupby("layer", sort=False):
        labels = block[block["family"].isin(["labels", "baseline"])]
        for test, area in (("area vs gap", "area_unit"), ("normalised area vs gap", "normalised_area_unit")):
            if area not in block:
                continue
            if labels["family"].eq("labels").any():
                rows.append(one(test, "labels family (and baseline)", layer, labels, area, "generalisation_gap"))
            rows.append(one(test, "all families", layer, block, area, "generalisation_gap"))
    for layer, block in units.groupby("layer", sort=False):
        rows.append(one("selectivity vs importance", "all units", layer, block, "selectivity", "importance"))
        for index, name in enumerate(classes):
            preferring = block[block["preferred_class"] == index]
            if len(preferring) > 2 and f"class_drop:{name}" in preferring:
                rows.append(
                    one(
                        "selectivity vs class drop",
                        f"units preferring class {name}",
                        layer,
                        preferring,
                        "selectivity",
                        f"class_drop:{name}",
                    )
                )
    return rows


def correlations_table(models: pd.DataFrame, units: pd.DataFrame, params: RelianceParams) -> pd.DataFrame:
    """Each correlation with its interval and verdict against +-correlation_margin (statistics/inference.py)."""
    from ablation_lab.statistics.inference import interval_verdict

    classes = [c.split(":", 1)[1] for c in units.columns if str(c).startswith("class_drop:")]
    frame = pd.DataFrame(correlation_rows(models, units, params, classes))
    if frame.empty:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    frame["margin"] = params.correlation_margin
    frame["verdict"] = [interval_verdict(lo, hi, params.correlation_margin) for lo, hi in zip(frame["low"], frame["high"], strict=True)]
    return frame


def rotation_table(models: pd.DataFrame, params: RelianceParams) -> pd.DataFrame:
    """Unit minus direction area, paired by seed, per variant and pooled over the models, with its equivalence verdict."""
    from ablation_lab.statistics.inference import equivalence_test, paired_difference

    if "area_direction" not in models:
        return pd.DataFrame(columns=ROTATION_COLUMNS)
    rows = []
    groups = [(f"{f}/{v}", layer, block) for (f, v, layer), block in models.groupby(["family", "variant", "layer"], sort=False)]
    groups += [("all models (mean per seed)", layer, block) for layer, block in distinct(models, "layer").groupby("layer", sort=False)]
    for model, layer, block in groups:
        per_seed = block.groupby("seed")[["area_unit", "area_direction"]].mean()
        diff = paired_difference(per_seed["area_unit"], per_seed["area_direction"])
        test = equivalence_test(diff, params.area_margin)
        rows.append({"model": model, "layer": layer, "seeds": diff["seeds"], "unit area": per_seed["area_unit"].mean()} | {
            "direction area": per_seed["area_direction"].mean(), "difference": diff["estimate"], "low": test["low"], "high": test["high"],
            "margin": params.area_margin, "verdict": test["verdict"], "method": diff["method"],
        })  # fmt: skip
    return pd.DataFrame(rows, columns=ROTATION_COLUMNS)


def dropout_table(table: pd.DataFrame, models: pd.DataFrame, params: RelianceParams) -> pd.DataFrame:
    """Dropout "protects only up to its own rate": per dropout model, layer and fraction removed, the
    accuracy drop from the intact model (unit curve, mean over draws), paired by seed, tested against
    +-area_margin: a drop *equivalent* to 0 means the model was protected at that fraction."""
    from ablation_lab.statistics.inference import equivalence_test, paired_difference

    rates = models[models["family"] == "dropout"].groupby("variant")["dropout"].first()
    curves = table[(table["family"] == "dropout") & (table["metric"] == "accuracy") & (table["basis"] == "unit")]
    means = curves.groupby(["variant", "layer", "fraction", "seed"])["value"].mean()
    rows = []
    for (variant, layer), block in means.groupby(level=["variant", "layer"], sort=False):
        wide = block.droplevel(["variant", "layer"]).unstack("fraction")  # seeds x fractions
        intact = wide[wide.columns.min()]
        for fraction in wide.columns[wide.columns > wide.columns.min()]:
            test = equivalence_test(paired_difference(intact, wide[fraction]), params.area_margin)
            rows.append({"model": f"dropout/{variant}", "rate": rates.get(variant, np.nan), "layer": layer, "fraction": fraction} | {
                "drop": test["estimate"], "low": test["low"], "high": test["high"], "margin": params.area_margin, "verdict": test["verdict"],
            })  # fmt: skip
    return pd.DataFrame(rows, columns=DROPOUT_COLUMNS)


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    if study.table is None or study.table.empty:
        return {name: pd.DataFrame(columns=columns) for name, columns in zip(SUMMARIES, SUMMARY_COLUMNS, strict=True)}
    models = models_table(study.table, study.variants)
    units = units_table(study.table)
    return {
        "reliance_models": models,
        "reliance_correlations": correlations_table(models, units, study.params),
        "reliance_rotation": rotation_table(models, study.params),
        "reliance_dropout": dropout_table(study.table, models, study.params),
    }


CORRELATION_COLUMNS = ["test", "scope", "layer", "estimate", "n", "clusters", "low", "high", "method", "margin", "verdict"]
ROTATION_COLUMNS = ["model", "layer", "seeds", "unit area", "direction area", "difference", "low", "high", "margin", "verdict", "method"]
DROPOUT_COLUMNS = ["model", "rate", "layer", "fraction", "drop", "low", "high", "margin", "verdict"]
MODEL_COLUMNS = ["family", "variant", "seed", "run", "layer", "area_unit", "generalisation_gap", "label_noise", "dropout"]
SUMMARIES = ("reliance_models", "reliance_correlations", "reliance_rotation", "reliance_dropout")
SUMMARY_COLUMNS = (MODEL_COLUMNS, CORRELATION_COLUMNS, ROTATION_COLUMNS, DROPOUT_COLUMNS)


def section(inputs: ReportInputs) -> list[SectionContent]:
    """The report section, handed the study's typed parameters."""
    return reliance_section(inputs, ANALYSIS.study_params(inputs.study))


ANALYSIS = Analysis(
    "reliance",
    "Reliance on single directions",
    "Cumulative unit ablation curves, their area against the generalisation gap, class selectivity against importance, and a random-direction control.",
    reliance_run,
    reliance_params,
    RelianceParams,
    chain_only=reliance_chain_only,
    check=reliance_check,
    code=("ablations", "analyses.knockout", "analyses.reliance_report", "models.surgery", "statistics"),
    wants=reliance_families,
    summaries=SUMMARIES,
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(section,),
)
