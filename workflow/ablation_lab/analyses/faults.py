"""Fault tolerance: fault-injection campaigns on the weights of trained models (issue 29).

Hardware faults (a particle strike, a worn memory cell) change the bits of a deployed
model's weights; whether the prediction then changes silently is what a fault-injection
campaign measures. Per trained model: every fault model of `faults.models` (a flipped bit,
a bit stuck at 0 or 1, a zeroed weight, a weight replaced by a random value from its
kernel's range) at each count of `faults.counts` faults per fault map, spread uniformly over
the chosen kernels (target `all`) and over each kernel alone (the per-layer vulnerability);
then single bit flips at each bit position of `faults.bits` (the per-bit sensitivity).
`faults.injections` fault maps per cell, each scored on the whole test split: accuracy, the
SDC rate (silent data corruption: of the examples the clean model gets right, the share
whose prediction changes to another class with finite outputs) and the share of examples
with NaN/Inf outputs (a detectable failure, kept apart from SDC).

Faults are written into the loaded model's variables in place and the touched entries
restored bit for bit after each map (models/fault_injection.py); the saved model file is
never written. With `faults.clip`, every map is also scored with each hidden layer's
outputs clipped to their per-unit range on the training split (Ranger, Chen et al. 2021):
the test split fits nothing. Fault-aware fine-tuning is not offered.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, RunContext, StudyTables
from ablation_lab.models.fault_injection import BIT_MODELS, FaultMap, WeightFaults, clip_bounds, forward, outcome, weight_layers
from ablation_lab.report.sections import ReportInputs, SectionContent, html_table

KEYS = ("models", "counts", "bit", "bits", "injections", "layers", "clip", "margin", "seed")
GROUP = ["family", "variant", "arm", "sweep", "target", "fault", "bit", "count"]
MEASURES = {"accuracy": ("correct", "examples"), "sdc_rate": ("sdc", "clean_correct"), "nonfinite_rate": ("nonfinite", "examples")}
ALL = "all"  # the target of faults spread over every chosen kernel


def chosen_weight_layers(model: Any, wanted: Sequence[str]) -> list[str]:
    """The kernels `faults.layers` names (empty: every Dense/Conv kernel); an unknown name is a one-line error."""
    available = weight_layers(model)
    for name in wanted:
        if name not in available:
            raise ValueError(f"faults.layers: {name!r} is not a Dense/Conv layer of this model (available: {', '.join(available)})")
    return list(wanted) or available


def cell_seed(seed: int, model_seed: int, cell: str, injection: int) -> np.random.Generator:
    """One fault map's generator: the same (config seed, model seed, cell, injection) always draws the same map.

    Cells are keyed by name, not position, so adding a count or a bit leaves the other maps as
    they were; variants trained with the same seed get the same maps (paired comparisons).
    """
    return np.random.default_rng(np.random.SeedSequence([seed, model_seed, zlib.crc32(cell.encode()), injection]))


def faults_table(
    model: Any, x_test: np.ndarray, y_test: np.ndarray, params: Mapping[str, Any], seed: int, x_train: np.ndarray | None = None
) -> pd.DataFrame:
    """Every fault map's counts on one trained model; `x_train` (the training split) is needed for `clip` only."""
    layers = chosen_weight_layers(model, params["layers"])
    faults = WeightFaults(model, layers)
    targets: list[tuple[str, list[int] | None]] = [(ALL, None)]
    targets += [(name, [k]) for k, name in enumerate(layers)] if len(layers) > 1 else []
    cells = [
        ("grid", fault, count, params["bit"] if fault in BIT_MODELS else None, target, chosen)
        for fault in params["models"]
        for count in params["counts"]
        for target, chosen in targets
    ]
    cells += [("bits", "bit_flip", 1, bit, ALL, None) for bit in params["bits"]]
    arms = {"none": None} | ({"clip": clip_bounds(model, x_train)} if params["clip"] else {})
    rows = []
    for arm, bounds in arms.items():
        run = forward(model, bounds)
        clean_outputs = run(x_test)
        clean = clean_outputs.argmax(axis=1)
        base = {"arm": arm, "examples": len(y_test), "clean_correct": int((clean == y_test).sum())}
        clean_row = {"sweep": "clean", "target": ALL, "fault": "none", "bit": -1, "count": 0, "injection": 0, "weights": 0}
        rows.append(base | clean_row | outcome(clean_outputs, y_test, clean))
        for sweep, fault, count, bit, target, chosen in cells:
            weights = int(faults.sizes[chosen].sum()) if chosen else int(faults.sizes.sum())
            for injection in range(params["injections"]):
                rng = cell_seed(params["seed"], seed, f"{sweep}|{fault}|{count}|{bit}|{target}", injection)
                fault_map = faults.draw(fault, count, rng, bit, chosen)
                with faults.injected(fault_map):
                    counts = outcome(run(x_test), y_test, clean)
                cell = {"sweep": sweep, "target": target, "fault": fault, "bit": -1 if bit is None else bit, "count": count}
                rows.append(base | cell | {"injection": injection, "weights": weights} | counts)
    if not faults.intact():
        raise RuntimeError("faults: a kernel did not get its original weights back after the campaign")
    columns = ["arm", "sweep", "target", "fault", "bit", "count", "injection", "weights", "examples", "clean_correct"]
    return pd.DataFrame(rows, columns=[*columns, "correct", "sdc", "nonfinite"])


def empty_map() -> FaultMap:
    """A fault map that touches nothing (zero faults: the clean model)."""
    nothing = np.zeros(0, dtype=np.int64)
    return FaultMap(nothing, nothing, np.zeros(0, np.float32), nothing)


def faults_run(context: RunContext, params: dict[str, Any]) -> pd.DataFrame:
    """The campaign on one trained model: the test split is scored; only `clip` reads the training split (its ranges)."""
    x_train = context.inputs("train") if params["clip"] else None
    return faults_table(context.model, context.inputs("test"), context.labels("test"), params, context.seed, x_train)


def faults_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("faults")
    return {key: block[key] for key in KEYS} if block else None


def faults_families(config: Mapping[str, Any], family: str) -> bool:
    return family in config["faults"]["families"]


# --- study level --------------------------------------------------------------------------


def summary_table(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (variant, arm, cell): each measure pooled over seeds and fault maps, with its clustered exact interval.

    The interval (statistics.clustered_clopper_pearson) treats each (seed, fault map) as one
    cluster of test examples: it covers which maps were drawn and which examples were
    scored, for these trained models; seed-to-seed training noise is the comparisons' job.
    """
    from ablation_lab.statistics.inference import clustered_clopper_pearson

    rows = []
    for key, part in table.groupby(GROUP, sort=False):
        row = dict(zip(GROUP, key, strict=True)) | {
            "seeds": part["seed"].nunique(),
            "maps": len(part),
            "weights": int(part["weights"].iat[0]),
        }
        for measure, (hits, trials) in MEASURES.items():
            ci = clustered_clopper_pearson(part[hits].to_numpy(), part[trials].to_numpy(), confidence)
            row |= {measure: ci["estimate"], f"{measure}_low": ci["low"], f"{measure}_high": ci["high"], f"{measure}_n_eff": ci["n_eff"]}
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed_sdc(table: pd.DataFrame, arm: str = "none") -> pd.DataFrame:
    """SDC rate per (variant, seed, fault, count) of the grid cells over every kernel: the unit comparisons pair."""
    grid = table[(table["arm"] == arm) & (table["sweep"] == "grid") & (table["target"] == ALL)]
    sums = grid.groupby(["family", "variant", "seed", "fault", "count"], sort=False)[["sdc", "clean_correct"]].sum().reset_index()
    return sums.assign(sdc_rate=sums["sdc"] / sums["clean_correct"])


def comparisons_table(table: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Each variant's SDC rate minus the baseline's, per grid cell: statistics.tables.compare_to_baseline on the SDC
    rate (paired by seed, Holm within each family and cell, interval verdicts against +-margin)."""
    from ablation_lab.ablations import BASELINE
    from ablation_lab.statistics.tables import compare_to_baseline

    rates = per_seed_sdc(table)
    if BASELINE not in set(rates["family"]) or rates["family"].nunique() < 2:
        return pd.DataFrame()
    parts = []
    for (fault, count), part in rates.groupby(["fault", "count"], sort=False):
        compared = compare_to_baseline(part[["family", "variant", "seed", "sdc_rate"]], metric="sdc_rate", margin=margin)
        parts.append(compared.assign(fault=fault, count=count))
    return pd.concat(parts, ignore_index=True)


def mitigation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Clipped minus unclipped SDC rate per variant and grid cell, paired by seed (statistics.paired_difference; unadjusted 95%)."""
    from ablation_lab.statistics.inference import paired_difference

    if "clip" not in set(table["arm"]):
        return pd.DataFrame()
    keys = ["family", "variant", "fault", "count", "seed"]
    both = per_seed_sdc(table, "none").merge(per_seed_sdc(table, "clip"), on=keys, suffixes=("_none", "_clip"))
    rows = []
    for (family, variant, fault, count), part in both.groupby(keys[:-1], sort=False):
        result = paired_difference(part["sdc_rate_clip"], part["sdc_rate_none"])
        rows.append(
            {"family": family, "variant": variant, "fault": fault, "count": count, "seeds": result["seeds"]}
            | {"sdc_none": part["sdc_rate_none"].mean(), "sdc_clip": part["sdc_rate_clip"].mean(), "difference": result["estimate"]}
            | {"diff_ci_low": result["low"], "diff_ci_high": result["high"], "method": result["method"]}
        )
    return pd.DataFrame(rows)


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    table = study.table
    if table is None or table.empty:
        return {name: pd.DataFrame() for name in SUMMARIES}
    return {
        "faults_summary": summary_table(table),
        "faults_comparisons": comparisons_table(table, study.params["margin"]),
        "faults_mitigation": mitigation_table(table),
    }


SUMMARIES = ("faults_summary", "faults_comparisons", "faults_mitigation")


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
        for row in range(2):
            axes[row, column].set_xscale("log")
            axes[row, column].set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("test accuracy")
    axes[1, 0].set_ylabel("SDC rate")
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
    axes.set(xlabel="bit position flipped (one weight per fault map)", ylabel="SDC rate", xticks=sorted(set(bits["bit"])))
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=7)
    axes.set_title("Per-bit sensitivity of the weights (float32)")
    save_figure(figure, path)


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    summary = pd.read_csv(tables["faults_summary"]) if Path(tables["faults_summary"]).stat().st_size > 1 else pd.DataFrame()
    plot_curves(summary, variants, out["faults"])
    plot_bits(summary, variants, out["faults_bits"])


# --- report -------------------------------------------------------------------------------


def _cell(estimate: float, low: float, high: float) -> str:
    return "n/a" if pd.isna(estimate) else f"{estimate:.4f} [{low:.4f}, {high:.4f}]"


def bit_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Bit position x variant: the SDC rate of one flipped weight bit with its exact 95% interval."""
    bits = summary[(summary["arm"] == "none") & (summary["sweep"] == "bits")]
    shown = bits.assign(
        model=bits["family"] + "/" + bits["variant"],
        cell=[_cell(*v) for v in zip(bits["sdc_rate"], bits["sdc_rate_low"], bits["sdc_rate_high"], strict=True)],
    )
    wide = shown.pivot_table(index="bit", columns="model", values="cell", aggfunc="first", sort=False).sort_index(ascending=False)
    return wide.reset_index().rename(columns={"bit": "bit"})


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


def campaign_sentence(summary: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """What interval width the configured number of fault maps bought, measured on this study's cells."""
    from ablation_lab.statistics.inference import clopper_pearson

    grid = summary[(summary["sweep"] != "clean") & (summary["arm"] == "none")]
    maps = int(grid["maps"].median()) if len(grid) else 0
    widths = (grid["sdc_rate_high"] - grid["sdc_rate_low"]).dropna()
    worst = np.subtract(*clopper_pearson(maps // 2, maps)[::-1]) if maps else float("nan")
    return (
        f"{params.get('injections')} fault maps per cell and model ({maps} per cell over the seeds) give SDC intervals of median "
        f"width {widths.median():.4f} (widest {widths.max():.4f}) here; were every map a single Bernoulli trial, "
        f"{maps} maps would give at worst a width of {worst:.3f} (p = 0.5): scoring each map on the whole test split "
        "is what narrows them, as far as the maps agree."
    )


def faults_section(inputs: ReportInputs) -> list[SectionContent]:
    summary = inputs.tables.get("faults_summary")
    if summary is None or summary.empty:
        return []
    params = inputs.study.get("faults") or {}
    layers = ", ".join(params.get("layers") or []) or "every Dense/Conv kernel"
    section = SectionContent("faults", "Fault tolerance").say(
        f"Faults injected into the weights of each trained model in memory (the saved model files are never changed): "
        f"{', '.join(m.replace('_', ' ') for m in params.get('models', []))} at {params.get('counts')} faults per fault map, "
        f"drawn uniformly over {layers} (bit faults: bit {params.get('bit') if params.get('bit') is not None else 'drawn uniformly per fault'}), "
        "and one flipped bit per map at each bit position. Each map is scored on the whole test split. Accuracy: share of "
        "test examples right under the fault. SDC rate (silent data corruption): of the examples the clean model gets "
        "right, the share whose prediction changes to another class with finite outputs. Non-finite: share of examples "
        "whose outputs hold NaN or Inf, a detectable failure counted apart from SDC. Pooled over seeds and fault maps; "
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
    section.blocks += comparison_blocks(inputs)
    return [section]


def comparison_blocks(inputs: ReportInputs) -> list[dict[str, str]]:
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
            "unadjusted 95%. Fault-aware fine-tuning is not measured."
        )
        shown = mitigation.assign(
            model=mitigation["family"] + "/" + mitigation["variant"],
            **{"95% CI": [interval(a, b) for a, b in zip(mitigation["diff_ci_low"], mitigation["diff_ci_high"], strict=True)]},
        )
        part.add_table(html_table(shown[["model", "fault", "count", "seeds", "sdc_none", "sdc_clip", "difference", "95% CI"]].round(4)))
    return part.blocks


def figures(study: Any) -> list[str]:
    return ["faults", "faults_bits"]


ANALYSIS = Analysis(
    "faults",
    "Fault tolerance",
    "Faults injected into trained weights (bit flips, stuck-at bits, zeroed and random weights); accuracy, SDC rate and non-finite outputs on test.",
    faults_run,
    faults_params,
    config_key="faults",
    code=("ablations", "models.fault_injection", "models.surgery", "statistics"),
    wants=faults_families,
    summaries=SUMMARIES,
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(faults_section,),
)
