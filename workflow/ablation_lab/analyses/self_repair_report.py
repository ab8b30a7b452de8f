"""The self-repair analysis's study level: intervals, figures and the section "Does the network repair a removal?".

Every interval comes from statistics/: a drop (direct, total, self-repair = direct - total),
per component or pooled over a layer's or a model's components, is a mean over seeds with
`inference.mean_interval` (seed noise at S - 1 df plus the test-set bootstrap from the saved
per-example drops, examples resampled for every seed at once: clustered by seed); the
repaired share (self-repair / direct) is `intervals.share_interval` (delta method, same
noises). A verdict reads the self-repair interval: above 0, total < direct (repaired: a
post-hoc effect understates the direct effect, a lower bound of it); below 0, total > direct
(amplified: an upper bound); else neither. Per-component verdicts are counted, unadjusted;
the model's sentence rests on one pooled interval per model, fill and metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import StudyTables
from ablation_lab.artifacts import read_table
from ablation_lab.report.sections import ReportInputs, SectionContent, html_table, interval

SUMMARIES = ("self_repair_effects", "self_repair_depth", "self_repair_models", "self_repair_sources")
COMPONENT = ["family", "variant", "layer", "component", "units", "depth", "fill", "metric"]
DEPTH = ["family", "variant", "layer", "depth", "fill", "metric"]
MODEL = ["family", "variant", "fill", "metric"]
METRIC_LABELS = {"logit": "correct-class logit", "log_probability": "correct-class log-probability", "accuracy": "accuracy"}


def per_seed(table: pd.DataFrame, arrays: Mapping[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:
    """One row per component, fill, metric and seed: direct and total drops, with their per-example drops."""
    chosen = table[table["quantity"].isin(["direct", "total"])]
    wide = chosen.pivot_table(index=[*COMPONENT, "seed"], columns="quantity", values=["value", "row"], aggfunc="first", sort=False)
    rows = []
    for key, row in wide.iterrows():
        cell = dict(zip([*COMPONENT, "seed"], key, strict=True))
        stored = arrays.get((cell["family"], cell["variant"], cell["seed"]), {}).get("drops")
        examples = {q: None if stored is None else stored[int(row[("row", q)])] for q in ("direct", "total")}
        rows.append(cell | {q: row[("value", q)] for q in ("direct", "total")} | {f"{q}_ex": examples[q] for q in examples})
    return pd.DataFrame(rows)


def pooled(seeds: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean over the components inside each group of `keys`, per seed (per-example drops averaged too)."""
    rows = []
    for key, part in seeds.groupby([*keys, "seed"], sort=False):
        examples = {q: None if part[f"{q}_ex"].isna().any() else np.mean(np.stack(part[f"{q}_ex"].to_list()), axis=0) for q in ("direct", "total")}  # fmt: skip
        rows.append(dict(zip([*keys, "seed"], key, strict=True)) | {"components": len(part), **part[["direct", "total"]].mean()})
        rows[-1] |= {f"{q}_ex": examples[q] for q in examples}
    return pd.DataFrame(rows)


def verdict(low: float, high: float) -> str:
    if pd.isna(low):
        return "n/a (no interval)"
    if low > 0:
        return "repaired (total < direct)"
    if high < 0:
        return "amplified (total > direct)"
    return "neither (interval includes 0)"


def estimates(seeds: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Direct, total, self-repair and repaired share per group of `keys` (one row per seed in `seeds`), with intervals."""
    from ablation_lab.statistics.inference import mean_interval
    from ablation_lab.statistics.intervals import share_interval

    rows = []
    for key, part in seeds.groupby(list(keys), sort=False):
        ex = {q: None if part[f"{q}_ex"].isna().any() else np.stack(part[f"{q}_ex"].to_list()) for q in ("direct", "total")}
        repair_ex = None if ex["direct"] is None else ex["direct"] - ex["total"]
        row = dict(zip(keys, key, strict=True)) | ({"components": int(part["components"].iat[0])} if "components" in part else {})
        for name, values, hits in (
            ("direct", part["direct"], ex["direct"]),
            ("total", part["total"], ex["total"]),
            ("self_repair", part["direct"] - part["total"], repair_ex),
        ):
            result = mean_interval(values.to_numpy(), hits=hits, bounds=None)
            row |= {name: result["estimate"], f"{name}_low": result["low"], f"{name}_high": result["high"]}
        share = share_interval(part["direct"] - part["total"], part["direct"], repair_ex, ex["direct"])
        row |= {"share": share["estimate"], "share_low": share["low"], "share_high": share["high"], "seeds": share["seeds"]}
        row |= {"verdict": verdict(row["self_repair_low"], row["self_repair_high"]), "method": result["method"]}
        rows.append(row)
    return pd.DataFrame(rows)


def sources_table(table: pd.DataFrame) -> pd.DataFrame:
    """Who repaired: per component layer, fill and metric, each later component's step (mean over components), over seeds."""
    from ablation_lab.statistics.inference import mean_interval

    steps = table[table["quantity"] == "repair_by"]
    if steps.empty:
        return pd.DataFrame()
    per_seed_means = steps.groupby([*DEPTH, "by", "seed"], sort=False)["value"].mean().reset_index()
    repair = table[table["quantity"] == "self_repair"].groupby(DEPTH, sort=False)["value"].mean()
    rows = []
    for key, part in per_seed_means.groupby([*DEPTH, "by"], sort=False):
        result = mean_interval(part["value"].to_numpy(), bounds=None)
        total = repair.get(key[:-1], np.nan)
        rows.append(dict(zip([*DEPTH, "by"], key, strict=True)) | {"repair": result["estimate"], "low": result["low"]})
        rows[-1] |= {"high": result["high"], "of_self_repair": result["estimate"] / total if total else np.nan, "method": result["method"]}
    return pd.DataFrame(rows)


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    table = study.table
    if table is None or table.empty:
        return {name: pd.DataFrame() for name in SUMMARIES}
    seeds = per_seed(table, study.arrays)
    effects = estimates(seeds.assign(components=1), COMPONENT).drop(columns="components")
    models = estimates(pooled(seeds, MODEL), MODEL)
    counts = effects.groupby(MODEL, sort=False)["verdict"].value_counts().unstack(fill_value=0)
    for name in ("repaired (total < direct)", "amplified (total > direct)"):
        label = f"components {name.split()[0]}"
        models[label] = [int(counts.loc[tuple(k), name]) if name in counts else 0 for k in models[MODEL].to_numpy()]
    return {
        "self_repair_effects": effects,
        "self_repair_depth": estimates(pooled(seeds, DEPTH), DEPTH),
        "self_repair_models": models,
        "self_repair_sources": sources_table(table),
    }


# --- figures ------------------------------------------------------------------------------


def figures(study: Any) -> list[str]:
    return ["self_repair", "self_repair_depth"]


def _first(frame: pd.DataFrame) -> pd.DataFrame:
    """The correct-class logit rows of the first fill: what the figures draw."""
    return frame[(frame["metric"] == "logit") & (frame["fill"] == frame["fill"].iloc[0])]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    """Direct vs total per component (the diagonal: no repair), and the repaired share by depth, per model."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure

    effects, depth = read_table(tables["self_repair_effects"]), read_table(tables["self_repair_depth"])
    if effects.empty:
        empty_figure(out["self_repair"], "No self-repair measured.")
        empty_figure(out["self_repair_depth"], "No self-repair measured.")
        return
    effects, depth = _first(effects), _first(depth)
    figure, (ax, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    for (family, variant, layer), part in effects.groupby(["family", "variant", "layer"], sort=False):
        label = f"{family}/{variant}: {layer}"
        ax.plot(part["direct"], part["total"], "o", ms=4, label=label)
        err = [part["self_repair"] - part["self_repair_low"], part["self_repair_high"] - part["self_repair"]]
        right.errorbar(part["direct"], part["self_repair"], yerr=err, fmt="o", ms=4, lw=0.8, capsize=2, label=label)
    ends = np.nanmin(effects[["direct", "total"]].to_numpy()), np.nanmax(effects[["direct", "total"]].to_numpy())
    ax.plot(ends, ends, color="black", lw=0.8, ls="--", label="total = direct (no repair)")
    ax.set(xlabel="direct effect: logit drop, nothing downstream reacting", ylabel="total effect: logit drop of the ablated model")
    ax.set_title(f"Per component, mean over seeds (fill: {effects['fill'].iloc[0]})", fontsize=9)
    right.axhline(0, color="black", lw=0.8, ls="--")
    right.set(xlabel="direct effect (logit drop)", ylabel="self-repair: direct - total")
    right.set_title("Self-repair per component (95% CI: seeds + test examples)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(figure, out["self_repair"])
    figure, (left, ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for (family, variant), part in depth.groupby(["family", "variant"], sort=False):
        part = part.sort_values("depth")
        err = [part["self_repair"] - part["self_repair_low"], part["self_repair_high"] - part["self_repair"]]
        left.errorbar(part["depth"], part["self_repair"], yerr=err, fmt="o-", ms=4, capsize=3, label=f"{family}/{variant}")
        shown = part[part["share_low"].notna()]  # a share whose direct effect is not clear of 0 is undefined: not drawn
        err = [shown["share"] - shown["share_low"], shown["share_high"] - shown["share"]]
        ax.errorbar(shown["depth"], shown["share"], yerr=err, fmt="o", ms=4, capsize=3, label=f"{family}/{variant}")
        for _, row in part.iterrows():
            left.annotate(row["layer"], (row["depth"], row["self_repair"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
            if pd.isna(row["share_low"]):
                ax.annotate(f"{row['layer']}: n/a", (row["depth"], 0), fontsize=7, xytext=(4, -10), textcoords="offset points")
    for axis in (left, ax):
        axis.axhline(0, color="black", lw=0.8)
        axis.set_xticks(sorted(depth["depth"].unique()))
        axis.set_xlabel("depth of the removed component (layer or block)")
    left.set(ylabel="self-repair: direct - total (logit)")
    left.set_title("Self-repair by depth, correct-class logit (95% CI)", fontsize=9)
    ax.set(ylabel="repaired share of the direct effect")
    ax.set_title("Repaired share = (direct - total) / direct (n/a: direct not clear of 0)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(figure, out["self_repair_depth"])


# --- report section -----------------------------------------------------------------------


def _cell(value: float, low: float, high: float, spec: str = "{:+.3f}") -> str:
    return "" if pd.isna(value) else f"{spec.format(value)} {interval(low, high, spec)}"


def model_sentence(row: pd.Series) -> str:
    """Whether post-hoc effects on this model were lower or upper bounds of the direct effect, read off the interval."""
    name = f"{row['family']}/{row['variant']} (fill {row['fill']}, {METRIC_LABELS[row['metric']]})"
    drop = f"total {row['total']:+.3f} vs direct {row['direct']:+.3f}, self-repair {_cell(row['self_repair'], row['self_repair_low'], row['self_repair_high'])}"
    share = (
        "" if pd.isna(row["share_low"]) else f", a repaired share of {_cell(row['share'], row['share_low'], row['share_high'], '{:.2f}')}"
    )
    if row["verdict"].startswith("repaired"):
        return f"{name}: {drop}{share}. Total < direct: the network repaired its removals, so post-hoc effects on this model were lower bounds of the direct effect."  # fmt: skip
    if row["verdict"].startswith("amplified"):
        return f"{name}: {drop}. Total > direct: the network amplified its removals, so post-hoc effects on this model were upper bounds of the direct effect."  # fmt: skip
    if pd.isna(row["self_repair_low"]):
        return f"{name}: {drop}. No interval (one seed): whether post-hoc effects on this model are lower or upper bounds of the direct effect was not tested; add seeds."  # fmt: skip
    return f"{name}: {drop}. The interval includes 0: post-hoc effects on this model were neither shown to be lower nor upper bounds of the direct effect."  # fmt: skip


def _shown(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    cells = {key: frame[key] for key in keys}
    for name in ("direct", "total", "self_repair"):
        cells[name.replace("_", "-")] = [_cell(v, a, b) for v, a, b in frame[[name, f"{name}_low", f"{name}_high"]].to_numpy()]
    cells["repaired share"] = [
        ("n/a (no interval)" if pd.isna(d) else "n/a (direct not clear of 0)") if pd.isna(a) else _cell(v, a, b, "{:.2f}")
        for v, a, b, d in frame[["share", "share_low", "share_high", "direct_low"]].to_numpy()
    ]
    cells["verdict"] = frame["verdict"]
    return pd.DataFrame(cells)


def self_repair_section(inputs: ReportInputs, params: Any) -> list[SectionContent]:
    """The section; `params`: the study's `SelfRepairParams` (None: the study does not ask for self-repair)."""
    models = inputs.tables.get("self_repair_models")
    if models is None or models.empty or params is None:
        return []
    section = SectionContent("self_repair", "Does the network repair a removal?").say(
        "Each component (a residual block, or a group of a layer's units or channels) removed from each trained model "
        f"({', '.join(params.families)}), no retraining. Total effect: the drop of the correct-class logit, "
        "log-probability and accuracy on the test split, every later layer reacting. Direct effect: the same drop if nothing "
        "downstream reacted (a block's write removed while later blocks write their clean values; in a chain, every later "
        "ReLU's on/off pattern and max-pool's argmax held at their clean values). Self-repair = direct - total "
        "(McGrath et al. 2023, the Hydra effect; Rushing & Nanda 2024). Intervals: 95% over seeds plus the test sample's noise."
    )
    for name, alt in (("self_repair", "direct vs total effect per component"), ("self_repair_depth", "repaired share by depth")):
        for path in inputs.figures.get(name, []):
            section.add_figure(path, alt)
    for _, row in models[models["metric"] == "logit"].iterrows():
        section.say(model_sentence(row))
    section.say("Per model, pooled over its components (mean drop per component):")
    counted = [c for c in models.columns if c.startswith("components ")]
    section.add_table(html_table(pd.concat([_shown(models, MODEL), models[["components", *counted]]], axis=1)))
    depth = inputs.tables.get("self_repair_depth")
    if depth is not None and len(depth):
        section.say("By depth: each layer's (block's) components pooled, the correct-class logit:")
        section.add_table(html_table(_shown(depth[depth["metric"] == "logit"], ["family", "variant", "layer", "fill"])))
    sources = inputs.tables.get("self_repair_sources")
    if sources is not None and len(sources):
        section.say(
            "Who repaired (correct-class logit): later components let react one at a time, input side first; each one's step "
            "(a block: its write's change read through the frozen head; head: the head's own reaction). The steps sum to the self-repair."
        )
        chosen = sources[sources["metric"] == "logit"]
        shown = chosen[["family", "variant", "layer", "fill", "by"]].assign(
            repair=[_cell(v, a, b) for v, a, b in chosen[["repair", "low", "high"]].to_numpy()],
            **{"share of the self-repair": chosen["of_self_repair"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")},
        )
        section.add_table(html_table(shown))
    return [section]
