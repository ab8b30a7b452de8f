"""An honest evaluation of NSDropout: every inference mode on the test split, and mask dependence.

NSDropout (ablation_lab/models/layers.py) keeps one mask per class. Its write-up evaluates a test
example with the mask of that example's *true label*, which hands the label to the network:
a model that learned to read the mask can score 100% without looking at the input. The
modes, all evaluated on the same test examples:

- `oracle`: the true label's mask (the published protocol; label leakage).
- `none`: no mask, like ordinary dropout at inference (what the saved model does by default).
- `average`: the mean of the class masks, the same for every example.
- `max-over-classes`: every class's mask in turn; predict the class whose own mask gives it
  the highest probability. Uses no label.

Mask dependence: every test example run under each *wrong* class's mask. If the prediction
follows the mask (predicted class = the mask's class) rather than the input, the oracle's
accuracy comes from the label, not from the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext
from ablation_lab.report.sections import ReportInputs, SectionContent, fmt, html_table, interval, png
from ablation_lab.specs import TrainingSpec

ORACLE, NONE, AVERAGE, MAX_OVER_CLASSES = "oracle", "none", "average", "max-over-classes"
MODES = (ORACLE, NONE, AVERAGE, MAX_OVER_CLASSES)
LABEL_FREE = (NONE, AVERAGE, MAX_OVER_CLASSES)
STANDARD = "standard"  # a model without NSDropout: its plain prediction
MODE_TITLES = {
    ORACLE: "oracle (true label's mask: label leakage)",
    NONE: "none (identity, like dropout)",
    AVERAGE: "average of the class masks",
    MAX_OVER_CLASSES: "max over classes (label-free)",
    STANDARD: "inference as trained",
}


def _predict(model: Any, x: np.ndarray, chunk: int = 4096, **masks: Any) -> np.ndarray:
    """Class probabilities with the given NSDropout inference arguments, in chunks."""
    from ablation_lab.models.layers import chain_forward

    parts = []
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        chosen = {key: value[rows] for key, value in masks.items()}
        parts.append(np.asarray(chain_forward(model, x[rows], training=False, **chosen)))
    return np.concatenate(parts).astype(np.float64)


def class_mask_probabilities(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(mask class, example, class) probabilities: every example under every class's mask."""
    return np.stack([_predict(model, x, mask_class=np.full(len(x), c, dtype=np.int32)) for c in range(n_classes)])


def predict_mode(model: Any, x: np.ndarray, mode: str, labels: np.ndarray | None = None, n_classes: int | None = None) -> np.ndarray:
    """Predicted classes under one inference mode; only `oracle` reads `labels`."""
    if mode == ORACLE:
        if labels is None:
            raise ValueError("the oracle mode needs the true labels (that is its flaw)")
        return _predict(model, x, mask_class=np.asarray(labels, dtype=np.int32)).argmax(axis=1)
    if mode == NONE:
        return _predict(model, x).argmax(axis=1)
    n_classes = n_classes or int(model.outputs[0].shape[-1])
    if mode == AVERAGE:
        return _predict(model, x, class_weights=np.full((len(x), n_classes), 1.0 / n_classes)).argmax(axis=1)
    if mode == MAX_OVER_CLASSES:
        per_mask = class_mask_probabilities(model, x, n_classes)
        return own_class_scores(per_mask).argmax(axis=1)
    raise ValueError(f"unknown NSDropout inference mode {mode!r} (known: {', '.join(MODES)})")


def own_class_scores(per_mask: np.ndarray) -> np.ndarray:
    """(example, class): the probability of class c under class c's own mask."""
    n_classes = per_mask.shape[0]
    return np.stack([per_mask[c, :, c] for c in range(n_classes)], axis=1)


def mask_dependence(per_mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and 'prediction = the mask's class' rate when a wrong class's mask is applied.

    Averaged over every (example, wrong class) pair. Chance for the follow rate is about
    1 / classes; a value near 1 means the mask, not the input, decides the prediction.
    """
    n_classes, n = per_mask.shape[0], per_mask.shape[1]
    predicted = per_mask.argmax(axis=2)  # (mask class, example)
    wrong = np.arange(n_classes)[:, None] != labels[None, :]
    correct = predicted == labels[None, :]
    follows = predicted == np.arange(n_classes)[:, None]
    pairs = max(int(wrong.sum()), 1)
    return {
        "wrong_mask_accuracy": float((correct & wrong).sum() / pairs),
        "follows_mask_rate": float((follows & wrong).sum() / pairs),
        "true_mask_accuracy": float(correct[labels, np.arange(n)].mean()),
    }


def nsdropout_table(model: Any, x: np.ndarray, labels: np.ndarray, modes: Sequence[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every mode's accuracy and error on the test inputs, mask dependence, and per-mode hit vectors.

    A model without an NSDropout layer gets one row set, mode `standard` (its plain prediction):
    the no-dropout and ordinary-dropout rows of the same comparison.
    """
    from ablation_lab.models.layers import nsdropout_layers

    labels = np.asarray(labels)
    rows: list[dict[str, Any]] = []
    hits: dict[str, np.ndarray] = {}
    if not nsdropout_layers(model):
        hits[STANDARD] = _predict(model, x).argmax(axis=1) == labels
    else:
        n_classes = int(model.outputs[0].shape[-1])
        per_mask = class_mask_probabilities(model, x, n_classes)
        for mode in modes:
            if mode == ORACLE:
                predicted = per_mask[labels, np.arange(len(labels))].argmax(axis=1)
            elif mode == MAX_OVER_CLASSES:
                predicted = own_class_scores(per_mask).argmax(axis=1)
            else:
                predicted = predict_mode(model, x, mode, n_classes=n_classes)
            hits[mode] = predicted == labels
        rows += [{"mode": "wrong-mask", "metric": name, "value": value} for name, value in mask_dependence(per_mask, labels).items()]
    for mode, hit in hits.items():
        rows += [
            {"mode": mode, "metric": "accuracy", "value": float(hit.mean())},
            {"mode": mode, "metric": "error_rate", "value": float(1 - hit.mean())},
        ]
    arrays = {hits_key(mode): hit for mode, hit in hits.items()}
    return pd.DataFrame(rows, columns=["mode", "metric", "value"]), arrays


def hits_key(mode: str) -> str:
    return f"hits_{mode.replace('-', '_')}"


def summarise_modes(table: pd.DataFrame, arrays: dict[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per (variant, mode): error rate over seeds with its interval, and the gap to the oracle.

    `arrays[(family, variant, seed)]` holds the per-example hit vectors the analysis saved.
    Intervals come from `statistics` (seed and test-sample noise), the same functions every
    accuracy in the report uses: `mean_interval` for a mode's error, `paired_difference` for a
    label-free mode minus the oracle on the same models and examples.
    """
    from ablation_lab.statistics.inference import mean_interval, paired_difference

    accuracy = table[table["metric"] == "accuracy"].sort_values("seed")
    rows = []
    for (family, variant, layer, rate), runs in accuracy.groupby(["family", "variant", "layer", "rate"], sort=False):
        by_mode = {mode: part for mode, part in runs.groupby("mode", sort=False)}

        def hits_of(mode: str, part: pd.DataFrame, key: tuple[str, str] = (family, variant)) -> np.ndarray:
            return np.asarray([arrays[(*key, seed)][hits_key(mode)] for seed in part["seed"]])

        for mode, part in by_mode.items():
            found = mean_interval(part["value"].to_numpy(), hits=hits_of(mode, part))
            row = {"family": family, "variant": variant, "layer": layer, "rate": rate, "mode": mode, "seeds": len(part)}
            row["accuracy"] = found["estimate"]
            row |= {
                "error_rate": 1 - found["estimate"],
                "error_low": 1 - found["high"],
                "error_high": 1 - found["low"],
                "method": found["method"],
                "df": found["df"],
            }
            if "best_epoch" in part:
                row["chosen_epochs"] = chosen_epochs(part)
            oracle = by_mode.get(ORACLE)
            if mode in LABEL_FREE and oracle is not None and list(oracle["seed"]) == list(part["seed"]):
                gap = paired_difference(
                    part["value"].to_numpy(),
                    oracle["value"].to_numpy(),
                    variant_hits=hits_of(mode, part),
                    baseline_hits=hits_of(ORACLE, oracle),
                )
                row |= {"minus_oracle": gap["estimate"], "minus_oracle_low": gap["low"], "minus_oracle_high": gap["high"]}
            rows.append(row)
    return in_reading_order(pd.DataFrame(rows))


def chosen_epochs(runs: pd.DataFrame) -> str:
    """Each seed's kept epoch, of the epochs it ran: "7, 9, 6 of 300" (the protocol's choice, on validation data)."""
    epochs = ", ".join("?" if pd.isna(e) else str(int(e)) for e in runs["best_epoch"])
    trained = runs["epochs_trained"].dropna()
    return epochs + (f" of {int(trained.max())}" if len(trained) else "")


LAYER_ORDER = {"none": 0, "standard": 1, "nsdropout": 2}
MODE_ORDER = {mode: position for position, mode in enumerate((STANDARD, *MODES))}


def in_reading_order(summary: pd.DataFrame) -> pd.DataFrame:
    """By rate, then no dropout / dropout / NSDropout, then oracle before the label-free modes."""
    if summary.empty:
        return summary
    keys = summary.assign(_layer=summary["layer"].map(LAYER_ORDER), _mode=summary["mode"].map(MODE_ORDER))
    return keys.sort_values(["rate", "_layer", "_mode"], kind="stable").drop(columns=["_layer", "_mode"]).reset_index(drop=True)


def nsdropout_run(context: RunContext, params: NSDropoutParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """NSDropout's inference modes and mask dependence on the test split (see ablation_lab/analyses/nsdropout.py)."""

    table, arrays = nsdropout_table(context.model, context.inputs("test"), context.labels("test"), params.modes)
    rate = context.model_spec.dropout or 0.0
    table.insert(0, "layer", context.model_spec.dropout_kind if rate else "none")
    table.insert(1, "rate", rate)
    record = context.provenance  # the epoch whose weights were kept (lowest validation loss), and how many ran
    table.insert(2, "best_epoch", record.get("best_epoch"))
    table.insert(3, "epochs_trained", record.get("epochs_trained"))
    return table, arrays


@dataclass(frozen=True)
class NSDropoutParams(Params):
    """Which inference modes each NSDropout model is scored under (from the `families.nsdropout` block)."""

    config_key = "families.nsdropout"

    modes: list[str]  # `MODES`, in the order the tables list them


def nsdropout_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config["families"].get("nsdropout")
    return {"modes": list(block["modes"])} if block else None


def nsdropout_summary(table: pd.DataFrame, arrays: dict[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:

    return summarise_modes(table, arrays)


def plot_nsdropout(summary: pd.DataFrame, table: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Left: test error of every (variant, inference mode) with its interval (the table's numbers).
    Right: mask dependence of each NSDropout model: with a wrong class's mask, how often the
    prediction is still right, and how often it is the mask's class (one point per seed)."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure, sns, variant_labels

    if summary.empty:
        empty_figure(path, "No NSDropout results to draw.")
        return
    rows = summary.assign(label=variant_labels(summary, variants), mode_title=summary["mode"].map(MODE_TITLES))
    rows["row"] = rows["label"] + " | " + rows["mode_title"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.0, 0.38 * len(rows) + 1)), gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))
    error = np.vstack([rows["error_rate"] - rows["error_low"], rows["error_high"] - rows["error_rate"]])
    colours = ["tab:red" if mode == "oracle" else "tab:blue" for mode in rows["mode"]]
    left.errorbar(100 * rows["error_rate"], y, xerr=100 * np.where(np.isfinite(error), error, 0), fmt="none", ecolor="black", capsize=3)
    left.scatter(100 * rows["error_rate"], y, c=colours, zorder=3)
    left.set_yticks(y, rows["row"])
    left.invert_yaxis()
    left.set(xlabel="test error (%), 95% interval", title="Error by inference mode (red: reads the true label)")
    dependence = table[(table["mode"] == "wrong-mask") & table["metric"].isin(["wrong_mask_accuracy", "follows_mask_rate"])]
    if dependence.empty:
        right.axis("off")
    else:
        shown = dependence.assign(label=variant_labels(dependence, variants))
        names = {"wrong_mask_accuracy": "still correct", "follows_mask_rate": "predicts the mask's class"}
        shown = shown.assign(measure=shown["metric"].map(names))
        sns.stripplot(data=shown, x="value", y="label", hue="measure", ax=right, dodge=True, size=6)
        right.set(
            xlim=(-0.02, 1.02), xlabel="share of (test example, wrong mask) pairs", ylabel="", title="Mask dependence (chance: 1 / classes)"
        )
        right.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


def _error_cell(row: Any) -> str:
    """Error rate in percent with its interval, as the write-up's table prints it."""
    return f"{100 * row.error_rate:.2f} " + interval(100 * row.error_low, 100 * row.error_high, "{:.2f}")


def modes_report_table(summary: pd.DataFrame, labels: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The write-up's format: one row per layer and inference mode, error (%) per dataset (this study's)."""

    table = summary.merge(labels, on=["family", "variant"], how="left")
    return pd.DataFrame(
        {
            "layer": table["label"].fillna(table["variant"]),
            "inference": table["mode"].map(MODE_TITLES),
            "seeds": table["seeds"],
            "kept epoch per seed": table.get("chosen_epochs", pd.Series([""] * len(table))).fillna(""),
            "df": table.get("df", pd.Series([float("nan")] * len(table))).map(lambda v: fmt(v, "{:.0f}")),
            f"{dataset}: test error % [95% CI]": [_error_cell(row) for row in table.itertuples()],
            "accuracy minus oracle [95% CI]": [
                ""
                if pd.isna(getattr(row, "minus_oracle", float("nan")))
                else f"{row.minus_oracle:+.4f} " + interval(row.minus_oracle_low, row.minus_oracle_high)
                for row in table.itertuples()
            ],
        }
    )


def nsdropout_verdicts(summary: pd.DataFrame, dependence: pd.DataFrame, n_classes: int) -> list[str]:
    """One sentence per NSDropout model: the oracle's error, the best label-free one, and mask dependence."""

    sentences = []
    for variant, part in summary.groupby("variant", sort=False):
        modes = part.set_index("mode")
        honest = modes[modes.index.isin(LABEL_FREE)]
        if ORACLE not in modes.index or honest.empty:
            continue
        best = honest["error_rate"].idxmin()
        oracle, chosen = modes.loc[ORACLE], honest.loc[best]
        follows = dependence[(dependence["variant"] == variant) & (dependence["metric"] == "follows_mask_rate")]["value"].mean()
        if chosen.get("minus_oracle_high", float("nan")) < 0:
            gap = (
                f"the gap of {100 * -chosen.minus_oracle:.2f} points excludes 0, so that much of the oracle's result needs the test label. "
            )
        elif chosen.get("minus_oracle_low", float("nan")) > 0:
            gap = "here the oracle is worse than a label-free mode (its interval excludes 0): the masks carry no label signal the network learned to use. "
        else:
            gap = "the difference is not resolved by these seeds and examples. "
        sentences.append(
            f"{variant}: oracle error {100 * oracle.error_rate:.2f}% against {100 * chosen.error_rate:.2f}% for the best label-free "
            f"mode ({best}); {gap}Under a wrong class's mask the prediction is that class {100 * follows:.0f}% of the time "
            f"(chance {100 / n_classes:.0f}%)."
        )
    return sentences


def training_protocol(training: TrainingSpec) -> str:
    """Which protocol produced the table: how long the models trained and how their epoch was chosen."""
    patience = training.early_stopping_patience
    stopping = f"stopping after {patience} epochs without a better validation score" if patience else "with no early stopping"
    kept = "highest validation accuracy" if training.keep_best == "val_accuracy" else "lowest validation loss"
    return (
        f"Protocol: each model trained for up to {training.epochs} epochs, {stopping}; the weights kept are "
        f"those of its epoch with the {kept} (validation split, unmasked forward pass: a label-free rule), the epoch "
        "shown per seed. The test split chose nothing."
    )


def nsdropout_section(inputs: ReportInputs) -> list[SectionContent]:
    summary, table = inputs.tables.get("nsdropout_summary"), inputs.tables.get("nsdropout")
    if summary is None or summary.empty:
        return []
    dataset = inputs.study["dataset"]["name"]
    labels = inputs.tables["summary"][["family", "variant", "label"]]
    section = SectionContent("nsdropout", "NSDropout").say(
        "NSDropout keeps one dropout mask per class, built from the difference between training-batch and validation "
        "activations; its write-up evaluates each test image with the mask of the image's true label. That hands the "
        "label to the network, which can learn to read the mask instead of the image, so the published 'oracle' rows "
        "measure leakage, not accuracy; the label-free modes (no mask, the average mask, or the best class over every "
        "mask) are what a deployed model could do."
    )
    section.figures = [
        {"alt": "NSDropout error by inference mode and mask dependence", "data": png(p)} for p in inputs.figures.get("nsdropout_modes", [])
    ]
    section.add_table(html_table(modes_report_table(summary, labels, dataset)))
    n_classes = len(inputs.meta.get("class_names", [])) or 10
    for sentence in nsdropout_verdicts(
        summary, table if table is not None else pd.DataFrame(columns=["variant", "metric", "value"]), n_classes
    ):
        section.say(sentence)
    section.say(training_protocol(TrainingSpec.of(inputs.study.get("training") or {})), "muted")
    methods = " | ".join(summary["method"].drop_duplicates()) if "method" in summary and len(summary) else ""
    section.say(f"Intervals (each row's own df in the table): {methods}; same test examples and models in every mode.", "muted")
    return [section]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    plot_nsdropout(pd.read_csv(tables["nsdropout_summary"]), pd.read_csv(tables["nsdropout"]), variants, out["nsdropout_modes"])


ANALYSIS = Analysis(
    "nsdropout",
    "NSDropout inference modes",
    "Every trained model of the nsdropout family on the test split under each inference mode, and how far its prediction follows a wrong class's mask.",
    nsdropout_run,
    nsdropout_params,
    NSDropoutParams,
    code=("models.layers", "ablations", "statistics"),
    wants=lambda config, family: family == "nsdropout",
    summaries=("nsdropout_summary",),
    summarise=lambda study: {"nsdropout_summary": summarise_modes(study.table, study.arrays)},
    figures=lambda study: ["nsdropout_modes"],
    plot=plot,
    sections=(nsdropout_section,),
)
