"""The fault-tolerance analysis's figures and report section (analyses/faults.py computes what they show).

Kept apart so each module stays readable: this one only reads the study tables
`faults_summary`, `faults_comparisons`, `faults_mitigation` and `faults_finetune` and draws or tabulates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.report.sections import ReportInputs, SectionContent, html_table

ALL = "all"  # the target of faults spread over every chosen kernel


# --- figures ------------------------------------------------------------------------------


def _labelled(frame: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> pd.DataFrame:
    from ablation_lab.report.figures import variant_labels

    return frame.assign(label=variant_labels(frame, variants))


def plot_curves(summary: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Accuracy and SDC rate vs faults per map (log axis), one column per fault model, one line per variant; bands: exact 95%."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure

    grid = summary[(summary["arm"] == "none") & (summary["sweep"] == "grid") & (summary["target"] == ALL)] if len(summary) else summary
    if grid.empty:
        empty_figure(path, "No fault-injection cell to draw.")
        return
    grid = _labelled(grid, variants)
    faults = list(dict.fromkeys(grid["fault"]))
    figure, axes = plt.subplots(2, len(faults), figsize=(3.2 * len(faults) + 1, 5.6), squeeze=False, sharex=True)
    for column, fault in enumerate(faults):
        for label, line in grid[grid["fault"] == fault].groupby("label", sort=False):
            for row, measure in enumerate(("accuracy", "sdc_rate")):
                drawn = axes[row, column].plot(line["count"], line[measure], "o-", markersize=3, label=label)
                axes[row, column].fill_between(
                    line["count"], line[f"{measure}_low"], line[f"{measure}_high"], alpha=0.15, color=drawn[0].get_color()
                )
        axes[0, column].set_title(fault.replace("_", " "))
        axes[1, column].set_xlabel("faults per fault map (log)")
        axes[0, column].set_ylim(-0.02, 1.02)
        axes[1, column].set_yscale("symlog", linthresh=1e-4)  # rare corruptions (zeroed weights) stay visible
        axes[1, column].set_ylim(0, 1.05)
        for row in range(2):
            axes[row, column].set_xscale("log")
    axes[0, 0].set_ylabel("test accuracy")
    axes[1, 0].set_ylabel("SDC rate (linear below 1e-4)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    figure.suptitle("Weight faults: accuracy and silent data corruption (pooled over seeds and fault maps)", y=1.0)
    save_figure(figure, path)


def plot_bits(summary: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """SDC rate of one flipped bit, per bit position (31 sign, 30-23 exponent, 22-0 mantissa); one bar per variant, exact 95% whiskers."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure

    bits = summary[(summary["arm"] == "none") & (summary["sweep"] == "bits")] if len(summary) else summary
    if bits.empty:
        empty_figure(path, "No per-bit sweep (faults.bits is empty).")
        return
    bits = _labelled(bits, variants)
    labels = list(dict.fromkeys(bits["label"]))
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(figsize=(11, 3.8))
    for offset, label in enumerate(labels):
        part = bits[bits["label"] == label]
        errors = np.vstack([part["sdc_rate"] - part["sdc_rate_low"], part["sdc_rate_high"] - part["sdc_rate"]])
        axes.bar(part["bit"] + (offset - (len(labels) - 1) / 2) * width, part["sdc_rate"], width, yerr=errors, label=label, capsize=1)
    axes.axvspan(22.5, 30.5, color="grey", alpha=0.08, label="exponent bits")
    axes.set_yscale("symlog", linthresh=1e-5)  # the mantissa's rare corruptions stay visible beside bit 30
    axes.set(
        xlabel="bit position flipped (one weight per fault map)", ylabel="SDC rate (linear below 1e-5)", xticks=sorted(set(bits["bit"]))
    )
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=7)
    axes.set_title("Per-bit sensitivity of the weights (float32)")
    save_figure(figure, path)


def _cell(estimate: float, low: float, high: float) -> str:
    return "n/a" if pd.isna(estimate) else f"{estimate:.4f} [{low:.4f}, {high:.4f}]"


def bit_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Bit position x variant: the SDC rate of one flipped weight bit with its exact 95% interval."""
    bits = summary[(summary["arm"] == "none") & (summary["sweep"] == "bits")]
    maps = [
        f"; maps {v:.2f} [{low:.2f}, {high:.2f}]"
        for v, low, high in bits[[f"map_failure_rate{e}" for e in ("", "_low", "_high")]].to_numpy()
    ]
    shown = bits.assign(
        model=bits["family"] + "/" + bits["variant"],
        cell=[_cell(*v) + m for *v, m in zip(bits["sdc_rate"], bits["sdc_rate_low"], bits["sdc_rate_high"], maps, strict=True)],
    )
    wide = shown.pivot_table(index="bit", columns="model", values="cell", aggfunc="first", sort=False).sort_index(ascending=False)
    return wide.reset_index()


def layer_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per layer: its weights, the SDC rate of the smallest fault count confined to it, and that rate weighted by its share of the weights."""
    layers = summary[(summary["arm"] == "none") & (summary["sweep"] == "grid") & (summary["target"] != ALL)]
    if layers.empty:
        return pd.DataFrame()
    layers = layers[layers["count"] == layers["count"].min()]
    total = layers.groupby(["family", "variant", "fault"])["weights"].transform("sum")
    return pd.DataFrame(
        {
            "model": layers["family"] + "/" + layers["variant"],
            "fault": layers["fault"],
            "layer": layers["target"],
            "weights": layers["weights"],
            "faults in the layer": layers["count"],
            "SDC rate [95%]": [_cell(*v) for v in zip(layers["sdc_rate"], layers["sdc_rate_low"], layers["sdc_rate_high"], strict=True)],
            "share of weights": (layers["weights"] / total).round(4),
            "SDC rate x share (uniform faults)": (layers["sdc_rate"] * layers["weights"] / total).round(5),
        }
    )


def activation_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model, layer, arm, fault and count of faulted entries per example: SDC rate and share of failing maps, exact 95%."""
    rows = summary[summary["sweep"] == "activations"]
    if rows.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "model": rows["family"] + "/" + rows["variant"],
            "layer": rows["target"],
            "arm": rows["arm"],
            "fault": rows["fault"],
            "faults per example": rows["count"],
            "SDC rate [95%]": [_cell(*v) for v in zip(rows["sdc_rate"], rows["sdc_rate_low"], rows["sdc_rate_high"], strict=True)],
            "maps failing [95%]": [
                _cell(*v) for v in zip(rows["map_failure_rate"], rows["map_failure_rate_low"], rows["map_failure_rate_high"], strict=True)
            ],
            "non-finite": rows["nonfinite_rate"].round(5),
        }
    )


def campaign_sentence(summary: pd.DataFrame, params: Any) -> str:
    """What interval width the configured number of fault maps bought, measured on this study's cells."""
    from ablation_lab.statistics.inference import clopper_pearson

    grid = summary[(summary["sweep"] != "clean") & (summary["arm"] == "none")]
    maps = int(grid["maps"].median()) if len(grid) else 0
    widths = (grid["sdc_rate_high"] - grid["sdc_rate_low"]).dropna()
    worst = np.subtract(*clopper_pearson(maps // 2, maps)[::-1]) if maps else float("nan")
    return (
        f"{params.injections} fault maps per cell and model ({maps} per cell over the seeds) give SDC intervals of median "
        f"width {widths.median():.4f} (widest {widths.max():.4f}) here; were every map a single Bernoulli trial, "
        f"{maps} maps would give at worst a width of {worst:.3f} (p = 0.5): scoring each map on the whole test split "
        "is what narrows them, as far as the maps agree."
    )


def faults_section(inputs: ReportInputs, params: Any) -> list[SectionContent]:
    """The section; `params`: the study's `FaultsParams` (None: the study has no campaign)."""
    summary = inputs.tables.get("faults_summary")
    if summary is None or summary.empty or params is None:
        return []
    layers = ", ".join(params.layers) or "every Dense/Conv kernel"
    section = SectionContent("faults", "Fault tolerance").say(
        f"Faults injected into the weights of each trained model in memory (the saved model files are never changed): "
        f"{', '.join(m.replace('_', ' ') for m in params.models)} at {params.counts} faults per fault map, "
        f"drawn uniformly over {layers} (bit faults: bit {params.bit if params.bit is not None else 'drawn uniformly per fault'})"
        + (f", and one flipped bit per map at each of bit positions {params.bits}. " if params.bits else ". ")
        + "Each map is scored on the whole test split. Accuracy: share of "
        "test examples right under the fault. SDC rate (silent data corruption): of the examples the clean model gets "
        "right, the share whose prediction changes to another class with finite outputs. Non-finite: share of examples "
        "whose outputs hold NaN or Inf, a detectable failure counted apart from SDC. Maps failing: the share of fault maps "
        "with any SDC or non-finite output, an exact interval over independent maps: it bounds how often a rare, "
        "catastrophic map occurs, which the per-example interval cannot see when no such map was drawn. Pooled over seeds and fault maps; "
        "95% intervals are exact (Clopper-Pearson) at the effective sample size of the maps (Korn & Graubard 1998): "
        "examples under one map share its fault, so maps are the independent unit. They cover which maps were drawn for "
        "these trained models, not seed-to-seed training noise, which the comparisons between variants cover."
    )
    section.say(campaign_sentence(summary, params))
    for name, alt in (("faults", "accuracy and SDC rate vs fault count"), ("faults_bits", "SDC rate per bit position")):
        for path in inputs.figures.get(name, []):
            section.add_figure(path, alt)
    clean = summary[summary["sweep"] == "clean"]
    if len(clean):
        section.say("Clean accuracy of the analysed models (no fault), per arm:")
        section.add_table(html_table(clean[["family", "variant", "arm", "seeds", "accuracy"]].round(4)))
    bits = bit_table(summary)
    if len(bits):
        section.say("SDC rate of one flipped weight bit per map, by bit position (31: sign, 30-23: exponent, 22-0: mantissa):")
        section.add_table(html_table(bits))
    per_layer = layer_table(summary)
    if len(per_layer):
        section.say(
            "Per-layer vulnerability: faults confined to one kernel. The SDC rate is per fault map of that many faults in the "
            "layer; weighted by the layer's share of the weights it is that layer's part of the whole network's rate under "
            "faults falling uniformly on every weight."
        )
        section.add_table(html_table(per_layer))
    activations = activation_table(summary)
    if len(activations):
        section.say(
            "Activation faults: each test example gets that many distinct entries of the layer's output faulted as it passes "
            "(the model is cut at the layer; the layers after it are rerun). Clip arm: the faulted layer clipped to its training range."
        )
        section.add_table(html_table(activations))
    section.blocks += comparison_blocks(inputs, params)
    return [section]


def comparison_blocks(inputs: ReportInputs, params: Any) -> list[dict[str, str]]:
    """The between-variant comparison (does dropout buy fault tolerance?) and the mitigation arm, as section blocks."""
    from ablation_lab.report.sections import interval

    part = SectionContent("faults_comparisons", "")
    compared = inputs.tables.get("faults_comparisons")
    if compared is not None and len(compared):
        part.say(
            "Does a variant tolerate weight faults better than the baseline? Its SDC rate minus the baseline's per fault model "
            "and count (faults over every kernel), paired by seed; Holm-adjusted 95% intervals within each family and cell "
            f"(statistics.tables.compare_to_baseline); verdicts against a margin of +-{compared['margin'].iat[0]:g}. Negative: fewer silent corruptions."
        )
        shown = pd.DataFrame(
            {
                "fault": compared["fault"],
                "count": compared["count"],
                "variant": compared["family"] + "/" + compared["variant"],
                "SDC difference": compared["difference"].map("{:+.4f}".format),
                "Holm 95% CI": [interval(a, b) for a, b in zip(compared["diff_ci_low"], compared["diff_ci_high"], strict=True)],
                "p (Holm)": compared["p_holm"].map(lambda v: f"{v:.3g}"),
                "verdict": compared["equivalence"],
                "seeds": compared["pairs"],
            }
        )
        part.add_table(html_table(shown))
    mitigation = inputs.tables.get("faults_mitigation")
    if mitigation is not None and len(mitigation):
        part.say(
            "Mitigation: every hidden layer's outputs clipped to their per-unit range on the training split (Ranger-style; the "
            "test split fits nothing), scored on the same fault maps. Clipped minus unclipped SDC rate, paired by seed, "
            "unadjusted 95%."
        )
        shown = mitigation.assign(
            model=mitigation["family"] + "/" + mitigation["variant"],
            **{"95% CI": [interval(a, b) for a, b in zip(mitigation["diff_ci_low"], mitigation["diff_ci_high"], strict=True)]},
        )
        part.add_table(html_table(shown[["model", "fault", "count", "seeds", "sdc_none", "sdc_clip", "difference", "95% CI"]].round(4)))
    part.blocks += finetune_blocks(inputs.tables.get("faults_finetune"), params)
    return part.blocks


def finetune_blocks(tuned: pd.DataFrame | None, params: Any) -> list[dict[str, str]]:
    """The fault-aware fine-tune arm: recovered share per variant, permanent fault model and count."""
    from ablation_lab.report.sections import interval

    part = SectionContent("faults_finetune", "")
    finetune = params.finetune
    if tuned is None or tuned.empty or finetune is None:
        return part.blocks
    part.say(
        f"Fault-aware fine-tuning (Zhang et al. 2018): the first {finetune.maps} fault maps of each permanent fault model's "
        f"cells over every kernel, each model trained on for {finetune.steps} steps on the training split (the study's "
        "optimizer, fresh; seeded batches) with the faulted weights held at their faulty values, then scored on the test split. "
        "Accuracy recovered: (fine-tuned - faulty) / (clean - faulty); SDC removed: (faulty - fine-tuned) / faulty SDC rate, "
        "SDC counted against the clean model's predictions; both pooled over the maps per seed, ratios of means over seeds with "
        "Fieller's 95% interval (n/a when the fault's own damage is not clear of 0 over the seeds). SDC counts finite outputs "
        "only: a fine-tune that diverged around a huge held weight (a stuck exponent bit) fails detectably, with NaN/Inf "
        "outputs, so read 'SDC removed' beside the maps that went non-finite; accuracy counts those examples as wrong. In "
        "brackets: the clean model fine-tuned alike (its accuracy; its SDC rate, the drift), what the steps alone change."
    )
    shown = pd.DataFrame(
        {
            "model": tuned["family"] + "/" + tuned["variant"],
            "fault": tuned["fault"],
            "count": tuned["count"],
            "seeds": tuned["seeds"],
            "maps": tuned["maps"],
            "non-finite maps": tuned["maps_nonfinite"],
            "accuracy clean / faulty / fine-tuned (clean fine-tuned)": [
                f"{a:.4f} / {b:.4f} / {c:.4f} ({d:.4f})"
                for a, b, c, d in zip(
                    tuned["accuracy_clean"],
                    tuned["accuracy_faulty"],
                    tuned["accuracy_finetuned"],
                    tuned["accuracy_clean_finetuned"],
                    strict=True,
                )
            ],
            "accuracy recovered [95%]": [
                f"{e:.3f} {interval(a, b)}"
                for e, a, b in zip(
                    tuned["accuracy_recovered"], tuned["accuracy_recovered_low"], tuned["accuracy_recovered_high"], strict=True
                )
            ],
            "SDC faulty / fine-tuned (drift)": [
                f"{a:.4f} / {b:.4f} ({c:.4f})"
                for a, b, c in zip(tuned["sdc_faulty"], tuned["sdc_finetuned"], tuned["sdc_drift"], strict=True)
            ],
            "SDC removed [95%]": [
                f"{e:.3f} {interval(a, b)}"
                for e, a, b in zip(tuned["sdc_removed"], tuned["sdc_removed_low"], tuned["sdc_removed_high"], strict=True)
            ],
        }
    )
    part.add_table(html_table(shown))
    return part.blocks
