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
the test split fits nothing. With `faults.finetune`, the first maps of each permanent fault
model's cells over every kernel (stuck-at bits and zeroed weights; a flipped bit is a
transient fault) are also fine-tuned (Zhang et al. 2018): the trained model trains on for a
few steps on the training split with the faulted entries held at their faulty values
(training/masked.py), then the test split is scored (arm `finetune`; its clean row is the
clean model fine-tuned alike). Figures and the report section: analyses/fault_report.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext, StudyTables, listed_families
from ablation_lab.analyses.fault_report import ALL, faults_section, plot_bits, plot_curves
from ablation_lab.models.fault_batch import MapScorer
from ablation_lab.models.fault_injection import (
    BIT_MODELS,
    FaultMap,
    WeightFaults,
    clip_bounds,
    faulty_activations,
    outcome,
    weight_layers,
)
from ablation_lab.report.sections import ReportInputs, SectionContent

KEYS = ("models", "counts", "bit", "bits", "injections", "layers", "activation_layers", "clip", "margin", "seed")
PERMANENT = ("stuck_at_0", "stuck_at_1", "zero")  # faults a memory cell keeps: what fault-aware fine-tuning retrains around
GROUP = ["family", "variant", "arm", "sweep", "target", "fault", "bit", "count"]
MEASURES = {"accuracy": ("correct", "examples"), "sdc_rate": ("sdc", "clean_correct"), "nonfinite_rate": ("nonfinite", "examples")}


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
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    params: FaultsParams,
    seed: int,
    x_train: np.ndarray | None = None,
    y_train: np.ndarray | None = None,
    training: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Every fault map's counts on one trained model; the training split is needed for `clip` (`x_train`) and
    `finetune` (`x_train`, `y_train` and the study's `training` block) only."""
    layers = chosen_weight_layers(model, params.layers)
    faults = WeightFaults(model, layers)
    targets: list[tuple[str, list[int] | None]] = [(ALL, None)]
    targets += [(name, [k]) for k, name in enumerate(layers)] if len(layers) > 1 else []
    cells = [
        ("grid", fault, count, params.bit if fault in BIT_MODELS else None, target, chosen)
        for fault in params.models
        for count in params.counts
        for target, chosen in targets
    ]
    cells += [("bits", "bit_flip", 1, bit, ALL, None) for bit in params.bits]
    arms = {"none": None} | ({"clip": clip_bounds(model, x_train)} if params.clip else {})
    drawn = []  # every map of the campaign, drawn once: the arms score the same maps
    for sweep, fault, count, bit, target, chosen in cells:
        weights = int(faults.sizes[chosen].sum()) if chosen else int(faults.sizes.sum())
        cell = {"sweep": sweep, "target": target, "fault": fault, "bit": -1 if bit is None else bit, "count": count}
        for injection in range(params.injections):
            rng = cell_seed(params.seed, seed, f"{sweep}|{fault}|{count}|{bit}|{target}", injection)
            drawn.append((cell | {"injection": injection, "weights": weights}, faults.draw(fault, count, rng, bit, chosen)))
    rows = []
    for arm, bounds in arms.items():
        scorer = MapScorer(model, faults, bounds)
        clean_outputs = scorer.whole(x_test)
        clean = clean_outputs.argmax(axis=1)
        base = {"arm": arm, "examples": len(y_test), "clean_correct": int((clean == y_test).sum())}
        clean_row = {"sweep": "clean", "target": ALL, "fault": "none", "bit": -1, "count": 0, "injection": 0, "weights": 0}
        rows.append(base | clean_row | outcome(clean_outputs, y_test, clean))
        outputs = scorer.outputs(x_test, [fault_map for _, fault_map in drawn])
        rows += [base | info | outcome(out, y_test, clean) for (info, _), out in zip(drawn, outputs, strict=True)]
        if arm == "none" and params.finetune:
            train = (x_train, y_train, training)
            rows += finetune_rows(model, faults, drawn, x_test, y_test, clean, train, params.finetune, seed)
    if not faults.intact():
        raise RuntimeError("faults: a kernel did not get its original weights back after the campaign")
    rows += activation_rows(model, x_test, y_test, params, seed, arms)
    columns = ["arm", "sweep", "target", "fault", "bit", "count", "injection", "weights", "examples", "clean_correct"]
    return pd.DataFrame(rows, columns=[*columns, "correct", "sdc", "nonfinite"])


def held_kernels(faults: WeightFaults, fault_map: FaultMap) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per chosen kernel: a 0/1 mask (0 at the map's faulted entries) and the faulty values those entries hold."""
    out = []
    for k, original in enumerate(faults.originals):
        mask, values, chosen = np.ones(original.size, np.float32), np.zeros(original.size, np.float32), fault_map.kernel == k
        mask[fault_map.index[chosen]] = 0.0
        values[fault_map.index[chosen]] = fault_map.values[chosen]
        out.append((mask.reshape(original.shape), values.reshape(original.shape)))
    return out


def finetune_rows(
    model: Any,
    faults: WeightFaults,
    drawn: Sequence[tuple[dict[str, Any], FaultMap]],
    x_test: np.ndarray,
    y_test: np.ndarray,
    clean: np.ndarray,
    train: tuple[Any, Any, Any],
    finetune: FinetuneParams,
    seed: int,
) -> list[dict[str, Any]]:
    """Arm `finetune`: the first `maps` maps of each permanent fault model's cells over every kernel, each trained on for
    `steps` steps (training split, seeded batches, a fresh optimizer) with its faulted entries held, then scored on test.

    SDC is counted against the clean model's predictions (`clean`); the clean row (an empty map fine-tuned alike) is
    what the fine-tune alone changes. A held entry that is not its faulty value afterwards is an error, not a row.
    """
    from ablation_lab.specs import TrainingSpec
    from ablation_lab.training.masked import MaskedTraining, batch_rows, seeded_dropout

    x_train, y_train, training = train
    trainer = MaskedTraining(model, None, TrainingSpec.of(training), x_train, y_train, held=faults.layers)
    rows_of_steps = batch_rows(seed, len(y_train), trainer.batch_size, int(finetune.steps))
    start = seeded_dropout(model, [v.numpy() for v in model.variables], seed)  # the same dropout masks in any process
    chosen = [
        (info, fault_map)
        for info, fault_map in drawn
        if info["sweep"] == "grid" and info["target"] == ALL and info["fault"] in PERMANENT and info["injection"] < finetune.maps
    ]
    clean_row = {"sweep": "clean", "target": ALL, "fault": "none", "bit": -1, "count": 0, "injection": 0, "weights": 0}
    base = {"arm": "finetune", "examples": len(y_test), "clean_correct": int((clean == y_test).sum())}
    rows = []
    for info, fault_map in [(clean_row, empty_map()), *chosen]:
        trainer.start(start, held=held_kernels(faults, fault_map))
        trainer.train(rows_of_steps)
        if trainer.held_entries_changed():
            raise RuntimeError("faults.finetune: a faulted weight left its faulty value during fine-tuning")
        rows.append(base | info | outcome(trainer.outputs(x_test), y_test, clean))
    return rows


def _tail(split: Any, activations: np.ndarray, clip: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The layers after the cut on (faulted) activations, clipped first to the training range in the clip arm."""
    return split.tail(activations if clip is None else np.clip(activations, *clip))


def activation_rows(
    model: Any, x_test: np.ndarray, y_test: np.ndarray, params: FaultsParams, seed: int, arms: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Faults in the outputs of `faults.activation_layers`, per test example (models/surgery.py cuts the model there:
    the layer's clean activations once, then only the layers after it per fault map). The clip arm clips the faulted layer."""
    from ablation_lab.models.surgery import knockout_layers, split_model

    if not params.activation_layers:
        return []  # weight faults only: any graph serves them (a branching model has no chain to cut)
    available = knockout_layers(model)
    rows = []
    for layer in params.activation_layers:
        if layer not in available:
            raise ValueError(f"faults.activation_layers: {layer!r} is not a hidden layer of this model (available: {', '.join(available)})")
        split = split_model(model, layer)
        activations = split.head(x_test)
        size = int(np.prod(activations.shape[1:]))
        for arm, bounds in arms.items():
            clip = bounds[layer] if bounds else None
            clean = _tail(split, activations, clip).argmax(axis=1)
            base = {"arm": arm, "sweep": "activations", "target": layer, "weights": size, "examples": len(y_test)}
            base["clean_correct"] = int((clean == y_test).sum())
            for fault in [f for f in params.models if f in (*BIT_MODELS, "zero")]:
                bit = params.bit if fault in BIT_MODELS else None
                for count in sorted({min(c, size) for c in params.counts}):
                    for injection in range(params.injections):
                        rng = cell_seed(params.seed, seed, f"activations|{fault}|{count}|{bit}|{layer}", injection)
                        faulty = faulty_activations(activations, fault, count, rng, bit)
                        counts = outcome(_tail(split, faulty, clip), y_test, clean)
                        rows.append(
                            base | {"fault": fault, "bit": -1 if bit is None else bit, "count": count, "injection": injection} | counts
                        )
    return rows


def empty_map() -> FaultMap:
    """A fault map that touches nothing (zero faults: the clean model)."""
    nothing = np.zeros(0, dtype=np.int64)
    return FaultMap(nothing, nothing, np.zeros(0, np.float32), nothing)


def faults_run(context: RunContext, params: FaultsParams) -> pd.DataFrame:
    """The campaign on one trained model: the test split is scored; only `clip` (its ranges) and `finetune` (its
    training) read the training split."""
    if not params.finetune:
        x_train = context.inputs("train") if params.clip else None
        return faults_table(context.model, context.inputs("test"), context.labels("test"), params, context.seed, x_train)
    x_train, y_train, training = context.inputs("train"), context.split.y("train"), context.spec["training"]
    return faults_table(context.model, context.inputs("test"), context.labels("test"), params, context.seed, x_train, y_train, training)


@dataclass(frozen=True)
class FinetuneParams(Params):
    """Fault-aware fine-tuning (the `faults.finetune` block)."""

    config_key = "faults.finetune"

    steps: int  # training steps of each fine-tune
    maps: int  # fault maps per cell and model that are fine-tuned (the first ones)


@dataclass(frozen=True)
class FaultsParams(Params):
    """The fault campaign (the `faults` block less its families, which pick the models)."""

    config_key = "faults"

    models: list[str]  # fault models (`bit_flip`, `stuck_at_1`, ...)
    counts: list[int]  # faults per fault map
    bit: int | None  # the bit a bit fault flips (None: drawn per fault)
    bits: list[int]  # the one-flip bit sweep's positions
    injections: int  # fault maps per cell and model
    layers: list[str]  # kernels faulted (empty: every Dense/Conv kernel)
    activation_layers: list[str]  # hidden layers whose outputs are faulted (empty: none)
    clip: bool  # also score every map with the hidden outputs clipped to their training range
    margin: float  # SDC-rate difference within which a variant counts as equivalent
    seed: int  # seeds the fault maps
    finetune: FinetuneParams | None  # None: off (and then absent from the probe's identity)

    @classmethod
    def of(cls, params: Params | Mapping[str, Any]) -> FaultsParams:
        """As `Params.of`, its `finetune` block typed too."""
        typed = super().of(params)
        return typed if typed.finetune is None else replace(typed, finetune=FinetuneParams.of(typed.finetune))


def faults_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Its block's keys; `finetune` only when on, so a study without it keeps its probe names."""
    from ablation_lab.config import ConfigError

    block = config.get("faults")
    if not block:
        return None
    finetune = block.get("finetune")
    if finetune and not set(PERMANENT) & set(block["models"]):
        raise ConfigError(f"invalid study config: faults.finetune: faults.models has no permanent fault model ({', '.join(PERMANENT)})")
    return {key: block[key] for key in KEYS} | ({"finetune": dict(finetune)} if finetune else {})


def faults_chain_only(config: Mapping[str, Any]) -> list[str]:
    """Its keys that cut the model as a chain: weight faults serve any graph, activation faults, clipping and fine-tuning do not."""
    block = config["faults"]
    return [f"faults.{key}" for key in ("activation_layers", "clip", "finetune") if block.get(key)]


def faults_check(config: Mapping[str, Any]) -> None:
    """`faults.layers` and `.activation_layers` name layers this model has: a typo is one plan-time line, not a failed job."""
    from ablation_lab import checks

    block, model = config["faults"], config["model"]
    if block.get("layers"):
        checks.check_weight_layers(block["layers"], model, "faults.layers")
    if block.get("activation_layers"):
        checks.check_posthoc_layers({"layers": block["activation_layers"]}, model, "faults.activation_layers")


# --- study level --------------------------------------------------------------------------


def summary_table(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (variant, arm, cell): each measure pooled over seeds and fault maps, with its clustered exact interval.

    The interval (statistics.clustered_clopper_pearson) treats each (seed, fault map) as one
    cluster of test examples: it covers which maps were drawn and which examples were
    scored, for these trained models; seed-to-seed training noise is the comparisons' job.
    A rare map that corrupts many examples (bit 30 of a weight on an active input) may not be
    drawn at all, which no interval over the drawn maps can see: `map_failure_rate`, the
    share of maps with any SDC or non-finite output, is a proportion of independent maps, so
    its exact interval bounds how often such maps occur.
    """
    from ablation_lab.statistics.inference import clopper_pearson, clustered_clopper_pearson

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
        failed = int(((part["sdc"] > 0) | (part["nonfinite"] > 0)).sum())  # maps are independent trials: exact as it stands
        low, high = clopper_pearson(failed, len(part), confidence)
        rows.append(row | {"map_failure_rate": failed / len(part), "map_failure_rate_low": low, "map_failure_rate_high": high})
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


def finetune_table(table: pd.DataFrame) -> pd.DataFrame:
    """Recovered share per variant, permanent fault model and count: fine-tuned vs faulty vs clean, paired by seed.

    Per seed, pooled over the fine-tuned maps and the same maps unfine-tuned: accuracy recovered =
    (fine-tuned - faulty) / (clean - faulty), SDC removed = (faulty SDC - fine-tuned SDC) / faulty SDC; each a
    ratio of means over seeds with Fieller's interval (statistics.intervals.ratio_interval). SDC counts finite
    outputs only: `maps_nonfinite` (fine-tuned maps with any NaN/Inf output, a fine-tune that diverged around a
    huge held weight) is to be read beside it; accuracy counts those examples as wrong. `accuracy_clean_finetuned`
    and `sdc_drift`: the clean model fine-tuned alike, what the training steps alone change.
    """
    from ablation_lab.statistics.intervals import ratio_interval

    tuned = table[(table["arm"] == "finetune") & (table["sweep"] == "grid")]
    if tuned.empty:
        return pd.DataFrame()
    keys, cell = ["family", "variant", "seed"], ["fault", "count", "injection"]
    faulty = table[(table["arm"] == "none") & (table["sweep"] == "grid") & (table["target"] == ALL)]
    faulty = faulty.merge(tuned[keys + cell], on=keys + cell)  # the same maps, not fine-tuned
    counts = ["correct", "sdc", "clean_correct", "examples"]
    pooled = (
        tuned.assign(maps=1, maps_nonfinite=tuned["nonfinite"] > 0)
        .groupby([*keys, "fault", "count"])[[*counts, "maps", "maps_nonfinite"]]
        .sum()
        .join(faulty.groupby([*keys, "fault", "count"])[counts].sum(), rsuffix="_faulty")
    )
    pooled = pooled.reset_index().merge(_clean_rates(table, "none"), on=keys).merge(_clean_rates(table, "finetune"), on=keys)
    pooled = pooled.assign(
        accuracy_finetuned=pooled["correct"] / pooled["examples"],
        accuracy_faulty=pooled["correct_faulty"] / pooled["examples_faulty"],
        sdc_finetuned=pooled["sdc"] / pooled["clean_correct"],
        sdc_faulty=pooled["sdc_faulty"] / pooled["clean_correct_faulty"],
    )
    shown = [
        "accuracy_clean",
        "accuracy_faulty",
        "accuracy_finetuned",
        "accuracy_clean_finetuned",
        "sdc_faulty",
        "sdc_finetuned",
        "sdc_drift",
    ]
    rows = []
    for (family, variant, fault, count), part in pooled.groupby(["family", "variant", "fault", "count"], sort=False):
        accuracy = ratio_interval(part["accuracy_finetuned"] - part["accuracy_faulty"], part["accuracy_clean"] - part["accuracy_faulty"])
        sdc = ratio_interval(part["sdc_faulty"] - part["sdc_finetuned"], part["sdc_faulty"])
        rows.append(
            {"family": family, "variant": variant, "fault": fault, "count": count, "seeds": accuracy["seeds"]}
            | {"maps": int(part["maps"].sum()), "maps_nonfinite": int(part["maps_nonfinite"].sum())}
            | part[shown].mean().to_dict()
            | {
                "accuracy_recovered": accuracy["estimate"],
                "accuracy_recovered_low": accuracy["low"],
                "accuracy_recovered_high": accuracy["high"],
            }
            | {"sdc_removed": sdc["estimate"], "sdc_removed_low": sdc["low"], "sdc_removed_high": sdc["high"], "method": accuracy["method"]}
        )
    return pd.DataFrame(rows)


def _clean_rates(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    """Per (family, variant, seed), the clean row's accuracy; for `finetune` also its SDC rate (the fine-tune's own drift)."""
    clean = table[(table["arm"] == arm) & (table["sweep"] == "clean")]
    out = clean[["family", "variant", "seed"]].copy()
    if arm == "none":
        return out.assign(accuracy_clean=(clean["correct"] / clean["examples"]).to_numpy())
    return out.assign(
        accuracy_clean_finetuned=(clean["correct"] / clean["examples"]).to_numpy(),
        sdc_drift=(clean["sdc"] / clean["clean_correct"]).to_numpy(),
    )


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    table = study.table
    if table is None or table.empty:
        return {name: pd.DataFrame() for name in SUMMARIES}
    return {
        "faults_summary": summary_table(table),
        "faults_comparisons": comparisons_table(table, study.params.margin),
        "faults_mitigation": mitigation_table(table),
        "faults_finetune": finetune_table(table),
    }


SUMMARIES = ("faults_summary", "faults_comparisons", "faults_mitigation", "faults_finetune")


# --- figures and report (analyses/fault_report.py) ---------------------------------------


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    from ablation_lab.artifacts import read_table

    summary = read_table(tables["faults_summary"])
    plot_curves(summary, variants, out["faults"])
    plot_bits(summary, variants, out["faults_bits"])


def figures(study: Any) -> list[str]:
    return ["faults", "faults_bits"]


def section(inputs: ReportInputs) -> list[SectionContent]:
    """The report section, handed the study's typed parameters."""
    return faults_section(inputs, ANALYSIS.study_params(inputs.study))


ANALYSIS = Analysis(
    "faults",
    "Fault tolerance",
    "Faults injected into trained weights (bit flips, stuck-at bits, zeroed and random weights); accuracy, SDC rate and non-finite outputs on test.",
    faults_run,
    faults_params,
    FaultsParams,
    chain_only=faults_chain_only,
    check=faults_check,
    code=("ablations", "models.fault_injection", "models.fault_batch", "models.surgery", "training.masked", "models.build", "statistics"),
    wants=listed_families("faults"),
    summaries=SUMMARIES,
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(section,),
)
