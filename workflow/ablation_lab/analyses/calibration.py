"""Calibration of a trained model's probabilities: how far its confidence matches its accuracy.

An ablation can leave accuracy flat and still make a model over- or under-confident. Per
model and test view: expected calibration error (ECE, equal-width confidence bins), the
binning-free Kolmogorov-Smirnov calibration error (Gupta et al., 2021), the Brier score, the
negative log-likelihood, and temperature scaling (Guo et al., 2017) fitted on the
validation split only, with ECE and NLL on test before and after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext
from ablation_lab.report.sections import ReportInputs, SectionContent, html_table, png

EPS = 1e-12


def confidence_and_hits(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == labels).astype(float)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per equal-width confidence bin: examples, mean confidence, accuracy (the reliability diagram)."""
    confidence, hits = confidence_and_hits(probabilities, labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)  # confidence 1.0 falls in the last bin
    frame = pd.DataFrame({"bin": index, "confidence": confidence, "hit": hits})
    table = frame.groupby("bin").agg(count=("hit", "size"), confidence=("confidence", "mean"), accuracy=("hit", "mean")).reset_index()
    table["low"], table["high"] = table["bin"] / bins, (table["bin"] + 1) / bins
    return table


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    table = reliability_bins(probabilities, labels, bins)
    return float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(labels))


def ks_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Largest gap between the cumulative accuracy and cumulative confidence, sorted by confidence."""
    confidence, hits = confidence_and_hits(probabilities, labels)
    order = np.argsort(confidence, kind="stable")
    return float(np.abs(np.cumsum(hits[order] - confidence[order]) / len(labels)).max())


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], EPS, 1.0)).mean())


def scale_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the logits are log p up to a per-example constant softmax ignores."""
    logits = np.log(np.clip(probabilities, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(val_probabilities: np.ndarray, val_labels: np.ndarray) -> float:
    """The temperature minimising validation NLL; pass the validation split only, never test."""
    from scipy.optimize import minimize_scalar  # here: importing the registry (at parse time) stays cheap

    result = minimize_scalar(
        lambda t: negative_log_likelihood(scale_temperature(val_probabilities, t), val_labels), bounds=(0.05, 20.0), method="bounded"
    )
    return float(result.x)


def calibration_metrics(
    val_probabilities: np.ndarray, val_labels: np.ndarray, test_probabilities: np.ndarray, test_labels: np.ndarray, bins: int = 15
) -> dict[str, float]:
    if not (np.all(np.isfinite(test_probabilities)) and np.all(np.isfinite(val_probabilities))):
        names = ("ece", "ks_error", "brier", "nll", "temperature", "ece_scaled", "nll_scaled")
        return dict.fromkeys(names, float("nan"))
    temperature = fit_temperature(val_probabilities, val_labels)
    scaled = scale_temperature(test_probabilities, temperature)
    return {
        "ece": expected_calibration_error(test_probabilities, test_labels, bins),
        "ks_error": ks_calibration_error(test_probabilities, test_labels),
        "brier": brier_score(test_probabilities, test_labels),
        "nll": negative_log_likelihood(test_probabilities, test_labels),
        "temperature": temperature,
        "ece_scaled": expected_calibration_error(scaled, test_labels, bins),
        "nll_scaled": negative_log_likelihood(scaled, test_labels),
    }


def calibrate_run(context: RunContext, params: CalibrationParams) -> pd.DataFrame:
    """Calibration of the model's test probabilities under the view; temperature fitted on validation."""

    val, test = context.probabilities("val"), context.probabilities("test")
    metrics = calibration_metrics(val, context.labels("val"), test, context.labels("test"), params.bins)
    rows = [{"bin": np.nan, "metric": name, "value": value} for name, value in metrics.items()]
    if np.all(np.isfinite(test)):
        for bin_row in reliability_bins(test, context.labels("test"), params.bins).itertuples():
            for name in ("count", "confidence", "accuracy"):
                rows.append({"bin": bin_row.bin, "metric": f"bin_{name}", "value": float(getattr(bin_row, name))})
    return pd.DataFrame(rows, columns=["bin", "metric", "value"])


@dataclass(frozen=True)
class CalibrationParams(Params):
    """How calibration is measured (the `calibration` block)."""

    config_key = "calibration"

    bins: int  # equal-width confidence bins of the ECE and the reliability diagram


def calibration_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("calibration")
    return {"bins": block["bins"]} if block else None


def plot_reliability(calibration: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Reliability diagrams: accuracy vs mean confidence per confidence bin, one panel per family.

    One line per variant (bins pooled over seeds, weighted by their counts); the diagonal is
    perfect calibration, a line below it an over-confident model.
    """
    from ablation_lab.report.figures import empty_figure, save_figure, sns, variant_labels

    bins = calibration[calibration["metric"].str.startswith("bin_")]
    if bins.empty:
        empty_figure(path, "No calibration to draw (every run diverged).")
        return
    wide = bins.pivot_table(index=["family", "variant", "seed", "bin"], columns="metric", values="value").reset_index()
    wide["hits"] = wide["bin_accuracy"] * wide["bin_count"]
    wide["confidence_sum"] = wide["bin_confidence"] * wide["bin_count"]
    pooled = wide.groupby(["family", "variant", "bin"], sort=False)[["hits", "confidence_sum", "bin_count"]].sum().reset_index()
    pooled["accuracy"] = pooled["hits"] / pooled["bin_count"]
    pooled["confidence"] = pooled["confidence_sum"] / pooled["bin_count"]
    pooled["label"] = variant_labels(pooled, variants)
    grid = sns.relplot(
        data=pooled,
        x="confidence",
        y="accuracy",
        hue="label",
        col="family",
        col_wrap=min(3, pooled["family"].nunique()),
        kind="line",
        marker="o",
        markersize=3,
        height=3,
        aspect=1.1,
        legend=False,
    )
    for axes in grid.axes.flat:
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1))
    grid.set_axis_labels("mean confidence in bin", "accuracy in bin")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Reliability diagrams (test split; dashed: perfect calibration)", y=1.02)
    save_figure(grid.figure, path)


def calibration_section(inputs: ReportInputs) -> list[SectionContent]:
    calibration = inputs.tables.get("calibration")
    if calibration is None or calibration.empty:
        return []
    section = SectionContent("calibration", "Calibration").say(
        "How far each variant's confidence matches its accuracy on the test split (under its test view): expected "
        "calibration error over equal-width confidence bins, the binning-free Kolmogorov-Smirnov calibration error, "
        "the Brier score and the negative log-likelihood; then temperature scaling, fitted on the validation split "
        "only, and the ECE and NLL it leaves on test. Means over seeds."
    )
    section.figures = [{"alt": "reliability diagrams", "data": png(p)} for p in inputs.figures.get("calibration", [])]
    summary = calibration[~calibration["metric"].str.startswith("bin_")]
    wide = summary.pivot_table(index=["family", "variant"], columns="metric", values="value", aggfunc="mean", sort=False).reset_index()
    columns = ["family", "variant", "ece", "ks_error", "brier", "nll", "temperature", "ece_scaled", "nll_scaled"]
    section.add_table(html_table(wide[[c for c in columns if c in wide]].round(4)))
    return [section]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    plot_reliability(pd.read_csv(tables["calibration"]), variants, out["calibration"])


ANALYSIS = Analysis(
    "calibration",
    "Calibration",
    "ECE, KS calibration error, Brier score and NLL on the test split under the variant's view; temperature fitted on validation.",
    calibrate_run,
    calibration_params,
    CalibrationParams,
    uses_test_view=True,
    figures=lambda study: ["calibration"],
    plot=plot,
    sections=(calibration_section,),
)
