"""Local elasticity (He & Su, "The Local Elasticity of Neural Networks", ICLR 2020).

A classifier is locally elastic when one SGD step on an example x_i moves its prediction at
x_i but barely moves it at a dissimilar x_j. The paper finds this in networks with
non-linear activations and not in linear classifiers, and clusters data with similarities
built from it. Here, for one trained model and a stratified sample of n test examples (the
same examples for every model and seed: the sample depends on `elasticity.seed` only, so
models are compared example by example), one SGD step on the cross-entropy of each x_i,
from the trained weights, and the change of the model's output (its class probabilities)
at every x_j:

    change[i, j] = || f(x_j; w - lr * grad_w L(x_i; w)) - f(x_j; w) ||

Similarities, both symmetrised as (S + S^T) / 2:
- relative, S_rel[i, j] = change[i, j] / change[i, i] (the paper's relative similarity);
- kernelized, S_ker[i, j] = change[i, j] / (lr * ||dL/df(x_i)||): the change per unit of
  the step's output gradient. To first order this is ||J(x_j) J(x_i)^T u_i|| with u_i the
  unit output gradient: for a one-output model exactly |NTK(x_i, x_j)|, the paper's kernel.

Summaries per model: the elasticity ratio (mean similarity of same-class pairs over that of
different-class pairs, for each similarity); the AUC: per row i, the ROC AUC with which
change[i, j] separates same-class from other-class x_j, averaged over rows; and the
agreement with the classes (adjusted Rand index, NMI) of K-means on the similarity matrix's
rows and of spectral clustering with it as affinity, against K-means on the raw inputs.

Why the verdict rests on the AUC: a well-fitted x_i has a tiny self-change (its softmax is
saturated), so its S_rel row is huge and dominates any mean over pairs; a row's AUC does not
depend on the row's scale (it is the same for change, S_rel and S_ker), so every example
weighs the same. 0.5 means the step moves same-class and other-class points alike.

Numerics: float64 throughout (the model's weights are cast). In float32 a confident output
rounds to exactly 1, its gradient to 0, and a well-fitted example's self-change to 0.

Efficiency: n steps evaluated at n points are never n x n model calls, nor n steps. To first
order, change[i, j] = -lr J(x_j) J(x_i)^T dL/df(x_i), and for Dense layers the Jacobian
factors by layer: with a_l(x) a layer's input and d_l(x) = df/dz_l its output Jacobian with
respect to the layer's pre-activation z_l (a batched Jacobian, `output_jacobians`),

    J(x_j) J(x_i)^T dL/df(x_i) = sum_l (a_l(x_i) . a_l(x_j) + 1) * d_l(x_j) g_l(x_i),
    g_l(x_i) = d_l(x_i)^T dL/df(x_i)   (the per-example loss gradient at z_l),

(the +1 is the bias). A learnable activation layer (GPActivation, BasisActivation) has its
own parameter theta, which the step moves too: its term is J_theta(x_j) J_theta(x_i)^T
dL/df(x_i), from per-example Jacobians df/dtheta (theta is small: control points or basis
terms, times units when per unit). One forward pass, one backward pass per output class
and a few small matrix products for all n^2 pairs (`first_order_changes`). `exact_changes`
takes each step and re-evaluates the model: the reference, used by the tests and the
benchmark, and for a few rows per model as a check of the first-order form at the
configured learning rate. The analysis uses the first-order form by default
(`elasticity.method`); since it is linear in the learning rate, its ratios, AUCs and
clusterings do not depend on it.

Any other model (conv layers, batch norm, a model file) is stepped through full per-example
Jacobians of every trainable parameter instead (`keras_first_order_changes`, on a float64
clone of the model): the same numbers on an MLP (tested), at a memory cost of samples x
classes x parameters, capped by JACOBIAN_BUDGET.

TensorFlow and scikit-learn are imported inside the functions that need them: the report
and the figures import the summaries of this module without either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext
from ablation_lab.analyses.similarity import input_clustering_scores, row_aucs, similarity_metrics
from ablation_lab.models.one_step import (
    KerasNetwork,
    Network,
    UnsupportedLayer,
    exact_changes,
    first_order_changes,
    float64_keras,
    float64_network,
    keras_exact_changes,
    keras_first_order_changes,
)
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS
from ablation_lab.report.sections import ReportInputs, SectionContent, fmt, html_table, interval, png

METHODS = ("first_order", "exact")  # `elasticity.method` (the schema's enum is tested against it)
COLUMNS = ["metric", "example", "value"]


# --- similarities and their summaries -------------------------------------------------------


# --- one model --------------------------------------------------------------------------------


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n examples of the split `labels` belongs to, classes in proportion, sorted by class.

    Depends on the labels and the seed only, so every model of a study gets the same examples.
    Every class needs 2 examples in the sample (a row's AUC needs another of its class).
    """
    from sklearn.model_selection import train_test_split

    if n > len(labels):
        raise ValueError(f"elasticity.samples: {n} examples asked, but the test split has {len(labels)}; lower it")
    chosen = np.arange(len(labels))
    if n < len(labels):
        try:
            chosen = train_test_split(chosen, train_size=n, stratify=labels, random_state=seed)[0]
        except ValueError:
            chosen = np.array([], dtype=int)  # fewer samples than classes: reported below
    counts = np.bincount(labels[chosen], minlength=labels.max() + 1)[np.unique(labels)]
    if len(chosen) < n or counts.min() < 2:
        raise ValueError(f"elasticity.samples: {n} examples leave a class with fewer than 2 in the sample; raise it")
    return chosen[np.lexsort((chosen, labels[chosen]))]


def check_rows(n: int, count: int) -> np.ndarray:
    """`count` rows spread evenly over the sample (it is sorted by class, so they span the classes)."""
    return np.unique(np.linspace(0, n - 1, count).round().astype(int)) if count else np.array([], dtype=int)


def elasticity_table(model: Any, x: np.ndarray, labels: np.ndarray, params: ElasticityParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One model's local elasticity on a stratified sample of the split (x, labels): the test split.

    Rows (metric, example, value): the summaries with example NaN, and `row_auc` per sampled
    example (its index in the split), which the report's intervals resample. Arrays: the
    sample's indices and labels, the change norms and the output-gradient norms.
    """
    sample = stratified_sample(labels, int(params.samples), int(params.seed))
    x, y = x[sample], labels[sample]
    try:  # the factored form for chains of Dense (and learnable) layers, full Jacobians otherwise
        network: Network | KerasNetwork = float64_network(model)
        first_order, exact_changes_of = first_order_changes, exact_changes
    except UnsupportedLayer:
        network, first_order, exact_changes_of = float64_keras(model), keras_first_order_changes, keras_exact_changes
    if not all(np.all(np.isfinite(w.numpy())) for w in network.params):
        return pd.DataFrame(columns=COLUMNS), {"sample": sample}  # a diverged model has nothing to step from
    rate = float(params.learning_rate)
    changes, gradient_norms = first_order(network, x, y, rate)
    checked = check_rows(len(y), int(params.check_rows))
    if params.method == "exact":
        changes, checked = exact_changes_of(network, x, y, rate, range(len(y))), np.array([], dtype=int)
    norms = np.linalg.norm(changes, axis=2)
    aucs = row_aucs(norms, y)
    metrics = {"auc": float(aucs.mean())} | similarity_metrics(norms, gradient_norms, y, rate, int(params.seed))
    metrics |= input_clustering_scores(x, y, len(np.unique(y)), int(params.seed))
    if len(checked):
        exact = exact_changes_of(network, x, y, rate, checked)
        metrics["first_order_error"] = float(np.linalg.norm(changes[checked] - exact) / np.linalg.norm(exact))
    rows = [{"metric": name, "example": np.nan, "value": value} for name, value in metrics.items()]
    rows += [{"metric": "row_auc", "example": int(index), "value": value} for index, value in zip(sample, aucs, strict=True)]
    return pd.DataFrame(rows, columns=COLUMNS), {"sample": sample, "labels": y, "change_norms": norms, "gradient_norms": gradient_norms}


# --- across seeds and variants (the report and the figure) ----------------------------------

SUMMARY_METRICS = {"auc": (0.0, 1.0), "ratio_kernel": None, "ratio_relative": None}  # metric -> the range it lives in
LINEAR = "linear"  # the activation variant without a non-linearity


def per_seed(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Seeds x variants (`family/variant`) of one summary metric."""
    rows = table[(table["metric"] == metric) & table["example"].isna()]
    return rows.assign(id=rows["family"] + "/" + rows["variant"]).pivot_table(index="seed", columns="id", values="value", sort=False)


def row_auc_matrix(table: pd.DataFrame, family: str, variant: str, seeds: Sequence[int]) -> np.ndarray | None:
    """Seeds x sampled examples of one variant's per-row AUCs (None if a seed has none)."""
    rows = table[(table["family"] == family) & (table["variant"] == variant) & (table["metric"] == "row_auc")]
    matrix = rows.pivot_table(index="seed", columns="example", values="value").reindex(list(seeds))
    return None if matrix.empty or matrix.isna().any(axis=None) else matrix.to_numpy()


def variant_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant: mean over seeds of the AUC and both ratios with 95% intervals, and mean clustering scores.

    Intervals from `statistics.mean_interval`, which decides every interval of the report. The
    AUC's adds the sampling noise of the examples: it is the mean of per-example row AUCs,
    and every model is scored on the same sampled examples, so they are bootstrapped like
    the test examples behind an accuracy. The ratios cover seed noise only.
    """
    from ablation_lab.statistics.inference import mean_interval

    out = []
    for (family, variant), part in table.groupby(["family", "variant"], sort=False):
        scores = part[part["example"].isna()].pivot_table(index="seed", columns="metric", values="value")
        row = {"family": family, "variant": variant, "seeds": len(scores)}
        for metric, bounds in SUMMARY_METRICS.items():
            values = scores.get(metric, pd.Series(np.nan, index=scores.index))
            hits = row_auc_matrix(part, family, variant, scores.index) if metric == "auc" else None
            result = mean_interval(values.to_numpy(), hits=hits, bounds=bounds)
            row |= {f"{metric}_mean": result["estimate"], f"{metric}_low": result["low"], f"{metric}_high": result["high"]}
        clustering = [c for c in scores.columns if c.startswith(("ari_", "nmi_")) or c in ("degenerate_rows", "first_order_error")]
        out.append(row | scores[clustering].mean().to_dict())
    return pd.DataFrame(out)


CLAIM_COLUMNS = ["activation", "learnable", "seeds", "estimate", "low", "high", "p_holm", "level", "verdict", "method"]


def activation_claims(table: pd.DataFrame) -> pd.DataFrame | None:
    """The paper's claim tested per activation: its mean AUC minus the linear model's, one row each.

    One contrast per non-linear activation of the activation family, fixed and learnable
    alike (a learned function may have learned to be near-linear: the table says so rather
    than pooling it away), each paired by seed with the linear variant on the seeds both
    have (`statistics.paired_difference`, with the per-example row AUCs of both sides so the
    sampling noise of the examples is in the interval). The intervals are Holm-adjusted over
    the activations, as a family's comparisons are; 'held' when an adjusted interval is above
    0, 'contradicted' below, else 'within seed noise' (`statistics.verdict`). None when the
    study has no linear and no non-linear variant of the activation family.
    """
    from ablation_lab.statistics.claims import verdict
    from ablation_lab.statistics.inference import adjusted_intervals, paired_difference

    activation = table[table["family"] == "activation"]
    variants = [v for v in activation["variant"].drop_duplicates() if v != LINEAR]
    if LINEAR not in set(activation["variant"]) or not variants:
        return None
    auc = per_seed(activation, "auc")
    rows = []
    for name in variants:
        both = auc[[f"activation/{name}", f"activation/{LINEAR}"]].dropna()
        seeds = list(both.index)
        mine, linear = row_auc_matrix(activation, "activation", name, seeds), row_auc_matrix(activation, "activation", LINEAR, seeds)
        if mine is None or linear is None:
            mine, linear = None, None
        result = paired_difference(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), variant_hits=mine, baseline_hits=linear)
        rows.append({"activation": name, "learnable": name in LEARNABLE_ACTIVATIONS} | result)
    found = pd.DataFrame(rows)
    adjusted = adjusted_intervals(found["estimate"], found["se"], found["df"], found["p_value"])
    found = found.assign(low=adjusted["low"], high=adjusted["high"], p_holm=adjusted["p_holm"], level=adjusted["level"])
    found["verdict"] = [verdict(low, high, seeds) for low, high, seeds in zip(found["low"], found["high"], found["seeds"], strict=True)]
    return found[CLAIM_COLUMNS]


def claims_sentence(claims: pd.DataFrame) -> str:
    """One sentence naming the activations for which the claim held, failed or was not resolved here."""
    groups = {
        "held": ("held for", ""),
        "contradicted": ("was contradicted for", " (the linear model came out more elastic)"),
        "within seed noise": ("was not resolved for", " (the interval includes 0)"),
    }
    parts = [
        f"{before} {', '.join(claims.loc[claims['verdict'] == key, 'activation'])}{after}"
        for key, (before, after) in groups.items()
        if (claims["verdict"] == key).any()
    ]
    untested = claims.loc[~claims["verdict"].isin(list(groups)), "activation"]
    if len(untested):
        parts.append(f"could not be tested for {', '.join(untested)} (it needs 2+ seeds)")
    return (
        "The paper's claim that non-linear activations are more locally elastic than a linear one "
        + "; ".join(parts)
        + ": each activation's mean AUC minus the linear model's, paired by seed, with Holm-adjusted intervals over the "
        "activations (table above). The verdicts rest on the AUC; the kernelized-similarity ratios, which a few rows can "
        "dominate, are in the table of variants."
    )


def elasticity_run(context: RunContext, params: ElasticityParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Local elasticity of one trained model on a stratified sample of the test split (see ablation_lab/analyses/elasticity.py).

    The model's own inputs (its training transforms applied to the test split), no test view.
    """

    try:
        return elasticity_table(context.model, context.inputs("test"), context.labels("test"), params)
    except UnsupportedLayer as error:  # a model too large for full Jacobians: the log says how large, the report says so
        log.warning("%s", error)
        return pd.DataFrame(columns=COLUMNS), {}


log = logging.getLogger("ablation_lab")


@dataclass(frozen=True)
class ElasticityParams(Params):
    """How local elasticity is measured (the `elasticity` block less its families, which pick the models)."""

    config_key = "elasticity"

    samples: int  # test examples in the stratified sample
    learning_rate: float  # the size of the SGD step on each example
    seed: int  # draws the sample and seeds the clusterings
    method: str  # `first_order` (checked on `check_rows` rows) or `exact`
    check_rows: int  # sampled rows whose first-order change is checked against the exact one


ELASTICITY_KEYS = tuple(field.name for field in fields(ElasticityParams))  # its probe's identity: these keys, in this order


def elasticity_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("elasticity")
    return {key: block[key] for key in ELASTICITY_KEYS} if block else None


def elasticity_check_sizes(config: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    """`elasticity.samples` against the test split's size: refused once, at plan time, not by every job that draws them."""
    from ablation_lab.config import ConfigError

    asked, have = config["elasticity"].get("samples"), sizes.get("test")
    if asked and have is not None and asked > have:
        raise ConfigError(
            f"invalid study config: elasticity.samples: {asked} examples asked, but the test split has {have}; lower it to at most {have}"
        )


ELASTICITY_FAMILIES = ("baseline", "activation")  # analysed when `elasticity.families` is null


def elasticity_families(config: Mapping[str, Any], family: str) -> bool:
    return family in (config["elasticity"]["families"] or ELASTICITY_FAMILIES)


def plot_elasticity(elasticity: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Local elasticity per analysed variant: the AUC (one point per seed, mean with its 95% interval) and clustering ARIs.

    Left: 0.5 is a model whose step moves same-class and other-class examples alike. Right:
    the agreement with the classes of clusterings of the similarity matrices, and of K-means on
    the raw inputs (dashed) as the reference. Intervals from `elasticity.variant_summary`.
    """
    from ablation_lab.report.figures import empty_figure, plt, save_figure, sns, variant_labels

    if elasticity.empty:
        empty_figure(path, "No local elasticity to draw (every analysed run diverged).")
        return
    summary = variant_summary(elasticity)
    summary["label"] = variant_labels(summary, variants)
    points = elasticity[elasticity["metric"] == "auc"]
    points = points.assign(label=variant_labels(points, variants))
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(summary) + 5), 3.8))
    sns.stripplot(data=points, x="label", y="value", order=summary["label"], ax=left, color="tab:blue", alpha=0.6, jitter=0.15)
    x = np.arange(len(summary))
    means = summary["auc_mean"].to_numpy()
    error = np.vstack([means - summary["auc_low"].to_numpy(), summary["auc_high"].to_numpy() - means])
    left.errorbar(x, means, yerr=np.where(np.isfinite(error), error, 0), fmt="o", color="black", capsize=4)
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(title="Same class vs other classes: row AUC", xlabel="", ylabel="mean row AUC (0.5: not elastic)")
    scores = {"spectral, S_ker": "ari_spectral_kernel", "K-means, S_ker": "ari_kmeans_kernel", "spectral, S_rel": "ari_spectral_relative"}
    bars = summary.melt(id_vars="label", value_vars=[c for c in scores.values() if c in summary], var_name="clustering", value_name="ARI")
    bars["clustering"] = bars["clustering"].map({column: name for name, column in scores.items()})
    sns.barplot(data=bars, x="label", y="ARI", hue="clustering", order=summary["label"], ax=right)
    right.axhline(summary["ari_kmeans_inputs"].mean(), color="black", linestyle="--", linewidth=1, label="K-means, raw inputs")
    right.set(title="Clustering the sample (mean over seeds)", xlabel="", ylabel="adjusted Rand index vs classes")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for axes in (left, right):
        axes.tick_params(axis="x", rotation=45 if len(summary) > 4 else 0)
    sns.despine(figure)
    save_figure(figure, path)


def elasticity_section(inputs: ReportInputs) -> list[SectionContent]:
    """Local elasticity per analysed variant, the clustering scores, and the paper's claim tested."""
    elasticity = inputs.tables.get("elasticity")
    if elasticity is None:
        return []
    if elasticity.empty:
        note = (
            "Not analysed: no model gave elasticity rows (a diverged model, or per-example Jacobians of this model's "
            "parameters above the memory budget for elasticity.samples: the elasticity jobs' logs say which)."
        )
        return [SectionContent("elasticity", "Local elasticity").say(note, "muted")]

    section = SectionContent("elasticity", "Local elasticity").say(
        "He & Su (2020): a classifier is locally elastic when an SGD step on one example barely moves its prediction at "
        "dissimilar examples. For each analysed model, one SGD step on the cross-entropy of each of a stratified sample "
        "of test examples (the same examples for every model), in float64, and the change of the class probabilities "
        "at every sampled example (first-order form, checked against actually taking the step on a few examples; a "
        "learnable activation's own parameters move in the step too). "
        "AUC: per stepped example, how well the size of the change separates examples of its class from the others "
        "(0.5: not at all), averaged; it ignores each row's scale, so a well-fitted example's tiny self-change cannot "
        "dominate it, and the verdict below rests on it. Ratio: mean similarity of same-class pairs over different-class "
        "pairs, for the kernelized (change per unit output gradient) and relative (change over self-change) similarity. "
        "Intervals: 95%, over seeds, the AUC's with a bootstrap over the sampled examples."
    )
    section.figures = [{"alt": "local elasticity", "data": png(p)} for p in inputs.figures.get("elasticity", [])]
    summary = variant_summary(elasticity)
    shown = pd.DataFrame(
        {
            "variant": summary["family"] + "/" + summary["variant"],
            "seeds": summary["seeds"],
            "AUC": summary["auc_mean"].map(lambda v: fmt(v, "{:.3f}")),
            "AUC 95% CI": [interval(a, b, "{:.3f}") for a, b in zip(summary["auc_low"], summary["auc_high"], strict=True)],
            "ratio S_ker": summary["ratio_kernel_mean"].map(lambda v: fmt(v, "{:.2f}")),
            "S_ker 95% CI": [
                interval(a, b, "{:.2f}") for a, b in zip(summary["ratio_kernel_low"], summary["ratio_kernel_high"], strict=True)
            ],
            "ratio S_rel": summary["ratio_relative_mean"].map(lambda v: fmt(v, "{:.2f}")),
            "S_rel 95% CI": [
                interval(a, b, "{:.2f}") for a, b in zip(summary["ratio_relative_low"], summary["ratio_relative_high"], strict=True)
            ],
            "zero self-changes": summary.get("degenerate_rows", pd.Series(dtype=float)).map(lambda v: fmt(v, "{:.0f}")),
            "first-order error": summary.get("first_order_error", pd.Series(dtype=float)).map(lambda v: fmt(v, "{:.1e}")),
        }
    )
    section.add_table(html_table(shown))
    section.say(
        "Clustering the sample into as many clusters as classes (mean over seeds): adjusted Rand index and NMI with the "
        "classes, of K-means on the rows of each symmetrised similarity matrix and of spectral clustering with it as "
        "affinity; K-means on the raw inputs of the same sample is the reference. K-means on the rows also sees each "
        "row's scale (a well-fitted example's row is near 0); spectral clustering reads the matrix as a graph."
    )
    columns = [f"{s}_{m}_{k}" for k in ("kernel", "relative") for m in ("kmeans", "spectral") for s in ("ari", "nmi")]
    columns += ["ari_kmeans_inputs", "nmi_kmeans_inputs"]
    clustering = summary[["family", "variant", *[c for c in columns if c in summary]]].round(3)
    section.add_table(html_table(clustering))
    claims = activation_claims(elasticity)
    if claims is None:
        return [section.say("No linear and non-linear activation variants were analysed: the paper's claim is not tested here.")]
    shown = pd.DataFrame(
        {
            "activation": claims["activation"] + np.where(claims["learnable"], " (learnable)", ""),
            "seeds": claims["seeds"],
            "AUC minus linear": claims["estimate"].map(lambda v: fmt(v, "{:+.3f}")),
            "interval (Holm)": [interval(a, b, "{:+.3f}") for a, b in zip(claims["low"], claims["high"], strict=True)],
            "p (Holm)": claims["p_holm"].map(lambda v: fmt(v, "{:.3g}")),
            "verdict (this interval)": claims["verdict"],
        }
    )
    section.say("The paper's claim, per activation: its AUC minus the linear model's (the interval decides the verdict).")
    section.add_table(html_table(shown))
    verdicts = set(claims["verdict"])
    css = "held" if verdicts == {"held"} else "contradicted" if verdicts == {"contradicted"} else "noise"
    return [section.say(claims_sentence(claims), css)]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    plot_elasticity(pd.read_csv(tables["elasticity"]), variants, out["elasticity"])


ANALYSIS = Analysis(
    "elasticity",
    "Local elasticity",
    "How one SGD step on a test example moves the model's output at other test examples of its class and of others (He & Su, 2020).",
    elasticity_run,
    elasticity_params,
    ElasticityParams,
    check_sizes=elasticity_check_sizes,
    code=("models.layers", "ablations", "statistics"),  # layers: the learnable activations' functions
    wants=elasticity_families,
    figures=lambda study: ["elasticity"],
    plot=plot,
    sections=(elasticity_section,),
)
