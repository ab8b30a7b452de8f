"""The recovery analysis's study level: summaries with intervals, figures and the report section.

Every interval comes from statistics/inference.py:
- accuracy per (criterion, fraction, arm, budget): `mean_interval` over seeds, plus the test
  sample's noise from the saved hit vectors;
- recovered share = (accuracy after budget b - post-hoc accuracy) / (retrained accuracy -
  post-hoc accuracy), paired by seed: `ratio_interval` (Fieller). Post-hoc: the fine-tune arm
  at budget 0 (the knockout, same mask); retrained: the `units` retrain variant of the same
  fraction and layer, when the study has it (else the share is absent and the report says so);
- comparisons (rewind vs re-initialise at equal budget; each criterion vs random, fine-tuned):
  `paired_difference` with the test-sample noise, Holm-adjusted over every comparison of the
  analysis (`adjusted_intervals`), each verdict read off its printed Holm interval
  (`interval_verdict`) against the study's equivalence margin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import StudyTables
from ablation_lab.artifacts import read_table
from ablation_lab.report.sections import ReportInputs, SectionContent, html_table, interval

CELL = ["family", "variant", "layer", "ordering", "fraction", "arm", "steps", "budget"]
ARM_LABELS = {"finetune": "fine-tune", "rewind": "rewind", "reinit": "re-initialise"}
THRESHOLDS = (0.5, 0.9)


def per_seed(table: pd.DataFrame, arrays: Mapping[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:
    """Accuracy per cell and seed (random draws averaged), with the seed's test hits (a per-example rate)."""
    acc = table[table["metric"] == "accuracy"]
    rows = []
    for key, part in acc.groupby([*CELL, "seed"], sort=False):
        stored = arrays.get((key[0], key[1], key[-1]), {}).get("hits")
        hits = None if stored is None else stored[part["hit_row"].astype(int).to_numpy()].mean(axis=0)
        rows.append(dict(zip([*CELL, "seed"], key, strict=True)) | {"accuracy": part["value"].mean(), "hits": hits})
    return pd.DataFrame(rows, columns=[*CELL, "seed", "accuracy", "hits"])


def _hits(part: pd.DataFrame) -> np.ndarray | None:
    return None if part["hits"].isna().any() else np.stack(part["hits"].to_list())


def curves_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per cell over seeds, with mean_interval's 95% interval (seed plus test-sample noise)."""
    from ablation_lab.statistics.inference import mean_interval

    rows = []
    for key, part in seeds.groupby(CELL, sort=False):
        result = mean_interval(part["accuracy"].to_numpy(), hits=_hits(part))
        rows.append(dict(zip(CELL, key, strict=True)) | {"seeds": result["seeds"], "accuracy": result["estimate"]})
        rows[-1] |= {"low": result["low"], "high": result["high"], "method": result["method"]}
    return pd.DataFrame(rows)


def retrained_per_seed(runs: pd.DataFrame, variants: Sequence[dict[str, Any]], fraction: float) -> pd.Series:
    """Accuracy per seed of the `units` retrain variant that removes `fraction` (empty when the study has none)."""
    from ablation_lab.ablations import UNITS

    names = [v["variant"] for v in variants if v["family"] == UNITS and np.isclose(v["coords"].get("fraction removed", -1), fraction)]
    chosen = runs[(runs["family"] == UNITS) & runs["variant"].isin(names[:1])]
    return chosen.set_index("seed")["accuracy"]


def share_table(seeds: pd.DataFrame, runs: pd.DataFrame, variants: Sequence[dict[str, Any]], params: Any) -> pd.DataFrame:
    """Recovered share per cell of the baseline's runs, paired by seed, with Fieller's interval (statistics.ratio_interval).

    `params`: recovery's `RecoveryParams` (this module is its helper, imported by it).
    """
    from ablation_lab.ablations import BASELINE
    from ablation_lab.statistics.intervals import ratio_interval

    rows = []
    chosen = seeds[seeds["family"] == BASELINE]
    posthoc = chosen[(chosen["arm"] == "finetune") & (chosen["steps"] == 0)].set_index(["ordering", "fraction", "seed"])["accuracy"]
    for key, part in chosen.groupby(CELL, sort=False):
        cell = dict(zip(CELL, key, strict=True))
        narrowed = params.units_layer
        retrained = retrained_per_seed(runs, variants, cell["fraction"]) if cell["layer"] == f"hidden_{narrowed}" else pd.Series()
        ends = pd.DataFrame(
            {
                "accuracy": part.set_index("seed")["accuracy"],
                "posthoc": posthoc.xs((cell["ordering"], cell["fraction"]), level=["ordering", "fraction"]),
            }
        )
        ends["retrained"] = retrained.reindex(ends.index)
        result = ratio_interval(ends["accuracy"] - ends["posthoc"], ends["retrained"] - ends["posthoc"])
        rows.append(cell | {"posthoc": ends["posthoc"].mean(), "retrained": ends["retrained"].mean(), "accuracy": ends["accuracy"].mean()})
        rows[-1] |= {"share": result["estimate"], "low": result["low"], "high": result["high"], "seeds": result["seeds"]}
        rows[-1] |= {
            "method": result["method"] if len(retrained) else "absent: the study has no units retrain variant for this fraction and layer"
        }
    return pd.DataFrame(rows)


def reach_table(shares: pd.DataFrame) -> pd.DataFrame:
    """Per (criterion, fraction, arm): the first budget whose mean share reaches 50% / 90%, and whose interval's low end does."""
    rows = []
    keys = ["family", "variant", "layer", "ordering", "fraction", "arm"]
    for key, part in shares.groupby(keys, sort=False):
        row, part = dict(zip(keys, key, strict=True)), part.sort_values("steps")
        for threshold in THRESHOLDS:
            mean = part[part["share"] >= threshold]
            sure = part[part["low"] >= threshold]
            row[f"reaches {threshold:.0%} (mean)"] = mean["budget"].iat[0] if len(mean) else "not within the grid"
            unsure = "n/a (no interval)" if part["low"].isna().all() else "not within the grid"
            row[f"reaches {threshold:.0%} (95% low end)"] = sure["budget"].iat[0] if len(sure) else unsure
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(seeds: pd.DataFrame, params: Any) -> pd.DataFrame:
    """Rewind minus re-initialise at every budget (first criterion), and each criterion minus random (fine-tuned) at
    budget 0, 1 epoch and the largest budget; paired by seed and test example, Holm over all of them."""
    from ablation_lab.statistics.inference import adjusted_intervals, interval_verdict, paired_difference

    pairs = []  # (comparison, cell of one side, cell of the other)
    first = params.orderings[0]
    for key, part in seeds.groupby(["family", "variant", "layer", "fraction", "steps"], sort=False):
        if {"rewind", "reinit"} <= set(part["arm"]):
            side = part[part["ordering"] == first]
            pairs.append(("rewind - re-initialise", first, key, side[side["arm"] == "rewind"], side[side["arm"] == "reinit"]))
        ladder = sorted(set(seeds["steps"]))
        picked = {0, ladder[-1], *seeds.loc[seeds["budget"] == "1 epoch", "steps"]}
        tuned = part[part["arm"] == "finetune"]
        if key[-1] in picked and "random" in set(tuned["ordering"]):
            for ordering in [o for o in params.orderings if o != "random"]:
                pairs.append(
                    (f"{ordering} - random", ordering, key, tuned[tuned["ordering"] == ordering], tuned[tuned["ordering"] == "random"])
                )
    rows = []
    for comparison, ordering, key, one, other in pairs:
        both = one.merge(other, on="seed", suffixes=("", "_other"))
        if both.empty:
            continue
        one_hits, other_hits = _hits(both), _hits(both.rename(columns={"hits": "_", "hits_other": "hits"}))
        result = paired_difference(both["accuracy"], both["accuracy_other"], variant_hits=one_hits, baseline_hits=other_hits)
        rows.append(dict(zip(["family", "variant", "layer", "fraction", "steps"], key, strict=True)) | {"budget": one["budget"].iat[0]})
        rows[-1] |= {"comparison": comparison, "ordering": ordering, "difference": result["estimate"], "se": result["se"]}
        rows[-1] |= {"df": result["df"], "p_value": result["p_value"], "seeds": result["seeds"], "method": result["method"]}
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    holm = adjusted_intervals(table["difference"], table["se"], table["df"], table["p_value"], bounds=(-1.0, 1.0))
    table = pd.concat([table, holm.rename(columns={"low": "holm_low", "high": "holm_high"})], axis=1)
    margin = params.margin
    table["verdict"] = [interval_verdict(low, high, margin) for low, high in zip(table["holm_low"], table["holm_high"], strict=True)]
    return table.assign(margin=margin)


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    table = study.table
    if table is None or table.empty:
        return {name: pd.DataFrame() for name in ("recovery_curves", "recovery_share", "recovery_reach", "recovery_comparisons")}
    seeds = per_seed(table, study.arrays)
    shares = share_table(seeds, study.runs, study.variants, study.params)
    return {
        "recovery_curves": curves_table(seeds),
        "recovery_share": shares,
        "recovery_reach": reach_table(shares),
        "recovery_comparisons": comparisons_table(seeds, study.params),
    }


# --- figures ------------------------------------------------------------------------------


def figures(study: Any) -> list[str]:
    return ["recovery", "recovery_criteria"]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    """Accuracy vs budget (symlog steps) per fraction and arm, post-hoc and retrained levels as the two ends; criteria panel."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure

    curves, shares = read_table(tables["recovery_curves"]), read_table(tables["recovery_share"])
    if curves.empty:
        empty_figure(out["recovery"], "No recovery curve to draw.")
        empty_figure(out["recovery_criteria"], "No recovery curve to draw.")
        return
    model = curves[["family", "variant"]].iloc[0]
    curves = curves[(curves["family"] == model["family"]) & (curves["variant"] == model["variant"])]
    fractions = sorted(curves["fraction"].unique())
    first = curves["ordering"].iloc[0]
    for name, selected, hue in (
        ("recovery", curves[curves["ordering"] == first], "arm"),
        ("recovery_criteria", curves[curves["arm"] == "finetune"], "ordering"),
    ):
        figure, axes = plt.subplots(1, len(fractions), figsize=(4.6 * len(fractions), 3.6), squeeze=False, sharey=True)
        for ax, fraction in zip(axes[0], fractions, strict=True):
            part = selected[np.isclose(selected["fraction"], fraction)]
            for label, line in part.groupby(hue, sort=False):
                line = line.sort_values("steps")
                ax.plot(line["steps"], line["accuracy"], "o-", ms=3, label=ARM_LABELS.get(label, label))
                ax.fill_between(line["steps"], line["low"], line["high"], alpha=0.15)
            ends = shares[np.isclose(shares["fraction"], fraction) & (shares["ordering"] == first)] if len(shares) else shares
            if len(ends):
                ax.axhline(ends["posthoc"].iat[0], color="tab:red", ls="--", lw=1, label="post-hoc (no retraining)")
                if np.isfinite(ends["retrained"].iat[0]):
                    ax.axhline(ends["retrained"].iat[0], color="black", ls=":", lw=1, label="retrained narrower")
            ax.set_xscale("symlog", linthresh=1)
            ticks = part.drop_duplicates("steps").sort_values("steps")
            ax.set_xticks(
                ticks["steps"],
                [b.replace(" epochs", " ep").replace(" epoch", " ep").replace(" steps", "").replace(" step", "") for b in ticks["budget"]],
            )
            ax.minorticks_off()
            ax.tick_params(axis="x", labelrotation=45)
            ax.set_xlim(left=-0.1)
            ax.set(
                title=f"{fraction:.0%} removed" + (f" ({first})" if hue == "arm" else ", fine-tuned"),
                xlabel="budget: steps after removal (ep: epochs)",
            )
        axes[0][0].set_ylabel("test accuracy (mean, 95% CI)")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        figure.suptitle(f"{model['family']}/{model['variant']}: {'arms' if hue == 'arm' else 'removal criteria'}")
        save_figure(figure, out[name])


# --- report section -----------------------------------------------------------------------


def _layer(layer: int | str) -> str:
    return layer if isinstance(layer, str) else f"hidden layer {layer}"


def _fmt(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def share_grid(shares: pd.DataFrame, by: str) -> pd.DataFrame:
    """Rows (fraction, `by`), one column per budget in step order: "share [low, high]"."""
    cells = shares.assign(
        cell=[f"{_fmt(v)} {interval(a, b, '{:.2f}')}" for v, a, b in zip(shares["share"], shares["low"], shares["high"], strict=True)]
    )
    grid = cells.pivot_table(index=["fraction", by], columns="steps", values="cell", aggfunc="first", sort=False)
    grid.columns = [cells.drop_duplicates("steps").set_index("steps").loc[c, "budget"] for c in grid.columns]
    return grid.reset_index().replace({by: ARM_LABELS})


def recovery_section(inputs: ReportInputs, params: Any) -> list[SectionContent]:
    """The section; `params`: the study's `RecoveryParams` (None: the study does not ask for recovery)."""
    curves = inputs.tables.get("recovery_curves")
    if curves is None or curves.empty or params is None:
        return []
    section = SectionContent("recovery", "How fast does the network compensate?").say(
        f"A fraction of {_layer(params.layer)}'s units removed from each trained model ({', '.join(params.families)}), "
        "then trained on with the study's optimizer on the training split, evaluated on test at each budget on the way. Removed "
        "units stay removed (masked in every forward pass; their weights stay exactly 0). Arms: fine-tune (survivors keep their "
        "trained weights), rewind (survivors reset to their initial values), re-initialise (fresh random weights). Criteria: "
        "knockout's orderings (validation split), the Taylor/Fisher score and the OBD saliency (training split); the test split "
        "is only predicted. Accuracy bands: 95% intervals over seeds plus the test sample's noise."
    )
    for name, alt in (("recovery", "accuracy vs budget per arm"), ("recovery_criteria", "accuracy vs budget per criterion")):
        for path in inputs.figures.get(name, []):
            section.add_figure(path, alt)
    shares = inputs.tables.get("recovery_share")
    if shares is not None and len(shares):
        absent = shares["retrained"].isna().all()
        section.say(
            "Recovered share = (accuracy after the budget - post-hoc accuracy) / (retrained accuracy - post-hoc accuracy), "
            "paired by seed, with Fieller's 95% interval (n/a: the denominator is not clear of 0 across seeds). "
            + ("The study has no units retrain variant for this layer and fraction, so the share is absent." if absent else "")
        )
        first = shares["ordering"].iat[0]
        ends = shares.drop_duplicates("fraction")[["fraction", "posthoc", "retrained"]]
        section.add_table(html_table(ends.assign(**{c: ends[c].map(_fmt) for c in ("posthoc", "retrained")})))
        section.say(f"Recovered share with its 95% interval, per arm ({first} order) and budget:")
        section.add_table(html_table(share_grid(shares[shares["ordering"] == first], "arm")))
        section.say("Recovered share per removal criterion, fine-tuned:")
        section.add_table(html_table(share_grid(shares[shares["arm"] == "finetune"], "ordering")))
    reach = inputs.tables.get("recovery_reach")
    if reach is not None and len(reach):
        section.say("The first budget at which the recovered share reaches 50% and 90%: by its mean, and by its interval's low end.")
        section.add_table(html_table(reach.drop(columns=["family", "variant", "layer"]).replace({"arm": ARM_LABELS})))
    compared = inputs.tables.get("recovery_comparisons")
    if compared is not None and len(compared):
        section.say(
            "Verdicts: rewind minus re-initialise at equal budget, and each criterion minus random order (fine-tuned), in test "
            f"accuracy, paired by seed and test example; Holm-adjusted over these {len(compared)} comparisons; each verdict is read off "
            f"the Holm interval printed beside it, against a margin of +-{compared['margin'].iat[0]:g}."
        )
        shown = pd.DataFrame(
            {
                "comparison": compared["comparison"],
                "fraction": compared["fraction"],
                "budget": compared["budget"],
                "difference": compared["difference"].map("{:+.4f}".format),
                "Holm 95% CI": [interval(a, b) for a, b in zip(compared["holm_low"], compared["holm_high"], strict=True)],
                "p (Holm)": compared["p_holm"].map(lambda v: f"{v:.3g}"),
                "verdict": compared["verdict"],
                "seeds": compared["seeds"],
            }
        )
        section.add_table(html_table(shown))
    return [section]
