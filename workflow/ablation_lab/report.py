"""The study's self-contained HTML report, built from a list of sections.

A section is one function from the report's named inputs to the content of zero or more
`<section>` blocks (id, title, figures, then paragraphs and HTML tables in reading order), plus the Jinja block that
draws it. Adding a capability's section is one function and one entry in SECTIONS; the
page itself only loops over them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment, select_autoescape

from ablation_lab.ablations import BASELINE, DERIVED, FAMILIES

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ablation study {{ study }} on {{ dataset }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.table-box { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
thead th { cursor: pointer; } th[aria-sort=ascending]::after { content: " \2191"; } th[aria-sort=descending]::after { content: " \2193"; }
.held { color: #176317; font-weight: bold; } .contradicted { color: #a11; font-weight: bold; }
.noise { color: #8a6d00; } figure { margin: 0.5em 0; } img { max-width: 100%; }
section { border-top: 2px solid #ddd; margin-top: 2em; } .muted { color: #666; font-size: 0.9em; }
</style></head><body>
<h1>Ablation study <code>{{ study }}</code> on <code>{{ dataset }}</code></h1>
<nav><ul>{% for s in sections %}<li><a href="#{{ s.id }}">{{ s.title }}</a></li>{% endfor %}</ul></nav>
{% for s in sections %}<section id="{{ s.id }}"><h2>{{ s.title }}</h2>
{% for fig in s.figures %}<figure><img alt="{{ fig.alt }}" src="data:image/png;base64,{{ fig.data }}"></figure>{% endfor %}
{% for b in s.blocks %}{% if b.kind == "table" %}<div class="table-box">{{ b.html|safe }}</div>{% elif b.kind == "figure" %}<figure><img alt="{{ b.alt }}" src="data:image/png;base64,{{ b.data }}"></figure>{% else %}<p class="{{ b.css }}">{{ b.text }}</p>{% endif %}{% endfor %}
{% if s.details %}<details><summary>{{ s.details.summary }}</summary><pre>{{ s.details.text }}</pre></details>{% endif %}
</section>{% endfor %}
<script>{{ sort_script|safe }}</script>
</body></html>
"""

# Click a column header to sort its table by that column; click again to reverse. Numbers
# (including an interval's lower bound, "[-0.03, ...]") sort as numbers, blanks last. Plain
# script, no library and no network: the report stays one self-contained file.
SORT_SCRIPT = """
(function () {
  function key(cell) {
    var text = cell ? cell.textContent.trim() : "";
    var number = parseFloat(text.replace(/^\\[/, ""));
    return { text: text, number: isFinite(number) ? number : null };
  }
  function compare(a, b) {
    if (a.text === "" || b.text === "") return (a.text === "") - (b.text === "");
    if (a.number !== null && b.number !== null) return a.number - b.number;
    if (a.number !== null || b.number !== null) return a.number === null ? 1 : -1;
    return a.text.localeCompare(b.text, undefined, { numeric: true });
  }
  function sortBy(table, header, column) {
    var body = table.tBodies[0];
    var direction = header.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) { return direction * compare(key(r.cells[column]), key(s.cells[column])); });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("thead th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
  }
  document.querySelectorAll("table").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var headers = table.tHead.rows[table.tHead.rows.length - 1].cells;
    Array.prototype.forEach.call(headers, function (header, column) {
      header.tabIndex = 0;
      header.title = "sort by this column (click again to reverse)";
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) { if (event.key === "Enter") sortBy(table, header, column); });
    });
  });
})();
"""


@dataclass
class ReportInputs:
    """Everything a section may draw from, by name (tables are pandas frames)."""

    study: dict[str, Any]
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sharing: dict[str, list[str]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # where the report was made: commit, host, platform
    model_source: dict[str, str] | None = None  # a model file or builder: its path and content digest


@dataclass
class SectionContent:
    id: str
    title: str
    blocks: list[dict[str, str]] = field(default_factory=list)  # paragraphs and tables, in reading order
    figures: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, str] | None = None

    def say(self, text: str, css: str = "") -> SectionContent:
        """A paragraph (escaped by Jinja)."""
        self.blocks.append({"kind": "text", "text": text, "css": css})
        return self

    def add_table(self, html: str) -> SectionContent:
        """A table made by pandas with escape=True (see `_html_table`)."""
        self.blocks.append({"kind": "table", "html": html})
        return self

    def add_figure(self, path: str | Path, alt: str) -> SectionContent:
        """A figure at this point of the reading order (the `figures` list comes before every block)."""
        self.blocks.append({"kind": "figure", "data": _png(path), "alt": alt})
        return self


def _png(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _interval(low: float, high: float, spec: str = "{:+.4f}") -> str:
    return "n/a" if pd.isna(low) else f"[{spec.format(low)}, {spec.format(high)}]"


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0)


def family_title(name: str) -> tuple[str, str]:
    if name == BASELINE:
        return "Baseline", "The unablated model every variant is compared with."
    if name in FAMILIES:
        return FAMILIES[name].title, FAMILIES[name].description
    if name in DERIVED:
        return DERIVED[name]
    first, _, second = name.partition("-x-")
    return f"Combination: {first} x {second}", f"Every {first} variant crossed with every {second} variant, trained as one model each."


def metric_means(runs: pd.DataFrame | None, metrics: tuple[str, ...] = ("macro_f1", "loss")) -> pd.DataFrame:
    """Per variant, the mean over its finite runs of each metric beside accuracy (empty without runs)."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["family", "variant", *metrics])
    present = [m for m in metrics if m in runs]
    return runs.groupby(["family", "variant"], sort=False)[present].mean().reset_index()


def family_table(summary: pd.DataFrame, comparisons: pd.DataFrame, family: str, runs: pd.DataFrame | None = None) -> str:
    """The family's variants: accuracy with its interval, the tested difference from the baseline,
    and (given `runs`) the mean macro F1 and loss, so a reader can sort by any of the three."""
    table = summary[summary["family"] == family].merge(comparisons, on=["family", "variant"], how="left")
    table = table.merge(metric_means(runs), on=["family", "variant"], how="left")
    shown = pd.DataFrame(
        {
            "variant": table["label"],
            "id": family + "/" + table["variant"],
            "seeds": table["seeds"],
            "diverged": table["diverged"],
            "accuracy (mean)": table["accuracy_mean"].map("{:.4f}".format),
            "95% CI": [_interval(a, b, "{:.4f}") for a, b in zip(table["accuracy_ci_low"], table["accuracy_ci_high"], strict=True)],
            "vs baseline": table["difference"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"),
            "diff CI (Holm)": [_interval(a, b) for a, b in zip(table["diff_ci_low"], table["diff_ci_high"], strict=True)],
            "p (Holm)": table["p_holm"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
            "within margin?": table.get("equivalence", pd.Series([""] * len(table))).fillna(""),
        }
    )
    for column, name in (("macro_f1", "macro F1 (mean)"), ("loss", "loss (mean)")):
        if column in table:
            shown[name] = table[column].map(lambda v: _fmt(v, "{:.4f}"))
    return _html_table(shown)


def methods_text(comparisons: pd.DataFrame, seeds: int, margin: float) -> str:
    """How every interval and test of the report was made (statistics.py decides them all)."""
    text = (
        "Each variant is compared with the baseline by its own paired differences (same seeds, same test examples): "
        "the variance is the seed-to-seed variance of those differences plus the test sample's own, from a paired "
        "bootstrap over test examples; intervals and p-values are Holm-adjusted within each family, so an interval "
        "excludes 0 exactly when its adjusted p is below 0.05. Accuracy intervals stay inside [0, 1]. "
        f"'No effect' is an equivalence test (TOST, margin +-{margin:g} accuracy): equivalent, different, or inconclusive."
    )
    if seeds < 3:
        needed = comparisons.get("seeds_needed", pd.Series(dtype=float)).dropna()
        advice = (
            f" The observed seed noise would need about {int(needed.median())} seeds to resolve a difference of the margin."
            if len(needed)
            else ""
        )
        rest = "has no degree of freedom (one seed: no seed noise is estimated)" if seeds == 1 else "rests on 1 degree of freedom"
        text += f" With {seeds} seed(s), the seed part of every interval {rest}: intervals are weak.{advice}"
    return text


def dataset_label(dataset: dict[str, Any]) -> str:
    """What the data is called on the page: the file's name for csv/npz studies (the format says little)."""
    if dataset.get("name") in ("csv", "npz") and dataset.get("path"):
        return Path(str(dataset["path"])).name
    return str(dataset["name"])


def runtime_table(benchmarks: pd.DataFrame | None) -> pd.DataFrame:
    """Per rule: jobs, total and median wall seconds, from Snakemake's benchmark files (one row per job)."""
    if benchmarks is None or benchmarks.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total s", "median s", "max s"])
    grouped = benchmarks.groupby("rule", sort=False)["s"]
    table = grouped.agg(["count", "sum", "median", "max"]).reset_index()
    table.columns = ["rule", "jobs", "total s", "median s", "max s"]
    return table.sort_values("total s", ascending=False, ignore_index=True).round({"total s": 1, "median s": 2, "max s": 2})


def model_label(model: dict[str, Any], source: dict[str, str] | None) -> str:
    """The baseline model in words; a model file or builder is named with its content digest."""
    if source and source["kind"] == "file":
        weights = "its own saved weights for the baseline" if source.get("weights") == "as_saved" else "retrained from fresh weights"
        return f"the model file {source['path']} (sha256 {source['sha256']}), {weights}"
    layers = "-".join(str(units) for units in model.get("hidden_units", [])) or "no hidden layer"
    head = f"{layers} {model.get('activation', '')}, dropout {model.get('dropout', 0):g}"
    if source and source["kind"] == "builder":
        return f"builder {model.get('builder')} ({source['path']}, sha256 {source['sha256']}), hidden {head}"
    if model.get("kind") == "cnn":
        return f"CNN with conv blocks of {'-'.join(str(f) for f in model.get('filters') or [16, 32])} filters, then dense {head}"
    return f"{'KST' if model.get('kind') == 'kst' else 'MLP'} {head}"


def study_summary(inputs: ReportInputs) -> str:
    """One line a reader can check the study against: data, model, training, variants, seeds, job time."""
    study, runs = inputs.study, inputs.tables["runs"]
    model, training = study.get("model", {}), study.get("training", {})
    seeds = study["seeds"]
    sizes = ", ".join(f"{k} {v}" for k, v in inputs.meta["sizes"].items())
    trained = runs[["run", "seed"]].drop_duplicates() if "run" in runs else runs
    text = (
        f"Data: {dataset_label(study['dataset'])} ({sizes}). Model: {model_label(model, inputs.model_source)}; "
        f"{training.get('optimizer', '')} for up to "
        f"{training.get('epochs', '?')} epoch(s). {inputs.tables['summary'].shape[0]} variants x {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}); {len(trained)} trained models."
    )
    benchmarks = inputs.tables.get("benchmarks")
    if benchmarks is not None and len(benchmarks):
        text += (
            f" Jobs before the report took {benchmarks['s'].sum():,.0f} s of wall time in all ({len(benchmarks)} jobs, "
            "summed: parallel jobs overlap, so the run itself was shorter; see Provenance)."
        )
    return text


def _baseline_twins(runs: pd.DataFrame, comparisons: pd.DataFrame) -> set[tuple[str, str]]:
    """Variants that are the baseline's own trained model with identical results (e.g. dropout 0).

    They are no ablation at all, so they are left out of "least harmful".
    """
    if "run" not in runs:
        return set()
    base_runs = set(runs.loc[runs["family"] == BASELINE, "run"])
    same_model = runs.groupby(["family", "variant"])["run"].agg(lambda r: set(r) <= base_runs)
    no_change = comparisons.set_index(["family", "variant"])["difference"] == 0
    return {key for key, same in same_model.items() if same and no_change.get(key, False)}


def main_findings(summary: pd.DataFrame, comparisons: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The three sentences a study leads with: most and least harmful ablation, and the verdict tally.

    Every number is read from the comparisons table (the Holm-adjusted intervals of the
    family tables and the forest plot), nothing is recomputed. Used by the overview and
    printed by `python -m ablation_lab findings` at the end of `make run`.
    """
    labels = summary.set_index(["family", "variant"])["label"]
    ranked = comparisons.dropna(subset=["difference"])
    twins = _baseline_twins(runs, ranked)
    ranked = ranked[[key not in twins for key in zip(ranked["family"], ranked["variant"], strict=True)]]
    if ranked.empty:
        return ["No ablation could be compared with the baseline."]

    def described(row: Any) -> str:
        label = labels.get((row.family, row.variant), row.variant)
        verdict = row.equivalence if isinstance(getattr(row, "equivalence", None), str) else "no verdict"
        return (
            f"{label} ({row.family}): {row.difference:+.4f} accuracy vs the baseline, Holm-adjusted 95% interval "
            f"{_interval(row.diff_ci_low, row.diff_ci_high)}; {verdict}"
        )

    ranked = ranked.sort_values("difference", kind="stable")
    verdicts = ranked.get("equivalence", pd.Series(dtype=str)).fillna("no verdict").value_counts()
    tally = ", ".join(f"{count} {verdict}" for verdict, count in verdicts.items())
    margin = ranked["margin"].iloc[0] if "margin" in ranked else float("nan")
    return [
        "Most harmful ablation: " + described(next(ranked.itertuples())) + ".",
        "Least harmful ablation: "
        + described(best := next(ranked.iloc[::-1].itertuples()))
        + (" (it scores above the baseline)." if best.difference > 0 else "."),
        f"Of {len(ranked)} ablations compared with the baseline (equivalence margin +-{margin:g}): {tally}."
        + (f" Left out: {len(twins)} variant(s) identical to the baseline's own model." if twins else ""),
    ]


# --- sections -------------------------------------------------------------------------------


def overview_section(inputs: ReportInputs) -> list[SectionContent]:
    runs, summary = inputs.tables["runs"], inputs.tables["summary"]
    seeds = inputs.study["seeds"]
    section = SectionContent("overview", "Overview").say(study_summary(inputs), "muted")
    for sentence in main_findings(summary, inputs.tables["comparisons"], runs):
        section.say(sentence)
    for path in inputs.figures.get("overview", []):
        section.add_figure(path, "forest plot: every variant's difference from the baseline with its Holm-adjusted interval")
    section.say(methods_text(inputs.tables["comparisons"], len(seeds), inputs.study.get("equivalence_margin", 0.01)), "muted")
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        section.say(
            "Diverged runs (loss became NaN): " + ", ".join(f"{r.family}/{r.variant} seed {r.seed}" for r in diverged.itertuples()),
            "contradicted",
        )
    section.blocks += as_saved_warning(inputs).blocks
    if inputs.sharing:
        section.say(
            "Variants that resolve to the same trained model share it (trained once per seed; "
            "test-time-only changes are applied when the shared model is evaluated):"
        )
        shared = pd.DataFrame([{"trained model": run, "variants": ", ".join(ids)} for run, ids in inputs.sharing.items()])
        section.add_table(_html_table(shared))
    return [section]


def as_saved_warning(inputs: ReportInputs) -> SectionContent:
    """With `model.weights: as_saved`, which variants are the saved weights and what the comparisons then mix."""
    note = SectionContent("overview", "")
    if not inputs.model_source or inputs.model_source.get("weights") != "as_saved":
        return note
    runs = inputs.tables["runs"]
    saved = sorted({f"{r.family}/{r.variant}" for r in runs.itertuples() if "-saved" in str(getattr(r, "run", ""))})
    return note.say(
        f"Saved weights: {', '.join(saved) or 'no variant'} use the model file's own trained weights (no training); every other "
        "variant was trained from fresh weights with this study's training settings, so its difference from the baseline "
        "includes the difference between your training and this study's (model.weights: retrain compares like with like). "
        "The saved model must not have seen this study's test split: train it on results/<data>/split.npz's training rows.",
        "contradicted",
    )


def findings_section(inputs: ReportInputs) -> list[SectionContent]:
    findings = inputs.tables["findings"]
    section = SectionContent("findings", "The article's claims, checked")
    if findings.empty:
        return [section.say("No family of this study bears on the article's claims.")]
    shown = pd.DataFrame(
        {
            "claim": findings["claim"],
            "estimate": findings["estimate"].map("{:+.4f}".format),
            "95% interval": [_interval(a, b) for a, b in zip(findings["ci_low"], findings["ci_high"], strict=True)],
            "seeds": findings["seeds"],
            "verdict": findings["verdict"],
            "how": findings["detail"],
        }
    )
    section.add_table(_html_table(shown))
    return [section]


def family_sections(inputs: ReportInputs) -> list[SectionContent]:
    summary, comparisons = inputs.tables["summary"], inputs.tables["comparisons"]
    out = []
    for family in summary["family"].drop_duplicates():
        title, description = family_title(family)
        section = SectionContent(f"family-{family}", title).say(description)
        section.figures = [{"alt": f"{family} figure {i + 1}", "data": _png(p)} for i, p in enumerate(inputs.figures.get(family, []))]
        section.add_table(family_table(summary, comparisons, family, inputs.tables.get("runs")))
        out.append(section)
    return out


def _fmt(value: float, spec: str = "{:+.4f}") -> str:
    return "" if pd.isna(value) else spec.format(value)


def class_drop_table(knockout: pd.DataFrame) -> pd.DataFrame:
    """Per knocked-out model and fraction: the mean accuracy drop and the worst-hit class's drop."""
    chosen = knockout[(knockout["ordering"] == "random") & knockout["metric"].str.startswith(("accuracy", "class_accuracy:"))]
    chosen = chosen[chosen["fill"] == chosen["fill"].iloc[0]] if len(chosen) else chosen
    means = chosen.groupby(["family", "variant", "layer", "metric", "fraction"], sort=False)["value"].mean().unstack("fraction")
    if means.empty:
        return pd.DataFrame()
    drops = means.rsub(means[means.columns.min()], axis=0)  # accuracy at the smallest fraction minus each
    rows = []
    for (family, variant, layer), block in drops.groupby(level=["family", "variant", "layer"], sort=False):
        classes = block.droplevel(["family", "variant", "layer"])
        for fraction in [f for f in classes.columns if f > classes.columns.min()]:
            per_class = classes.loc[classes.index != "accuracy", fraction]
            worst = per_class.idxmax()
            rows.append(
                {
                    "model": f"{family}/{variant}",
                    "layer": layer,
                    "fraction removed": f"{fraction:g}",
                    "mean accuracy drop": f"{classes.loc['accuracy', fraction]:+.3f}",
                    "worst class": worst.split(":", 1)[1],
                    "its drop": f"{per_class[worst]:+.3f}",
                }
            )
    return pd.DataFrame(rows)


def last_epoch_share(history: pd.DataFrame) -> tuple[int, int]:
    """How many runs trained for 2+ epochs had their lowest validation loss at their last epoch, of how many."""
    several = history.groupby(["run", "seed"])["epoch"].transform("max") > 1
    runs = history[several].drop_duplicates(["run", "seed", "epoch"]).groupby(["run", "seed"])
    if not len(runs):
        return 0, 0
    best_at_end = runs.apply(lambda h: h["val_loss"].idxmin() == h["epoch"].idxmax(), include_groups=False)
    return int(best_at_end.sum()), len(best_at_end)


def training_section(inputs: ReportInputs) -> list[SectionContent]:
    history = inputs.tables.get("history")
    if history is None or history.empty:
        return []
    section = SectionContent("training", "Training")
    section.figures = [{"alt": "learning curves", "data": _png(p)} for p in inputs.figures.get("learning_curves", [])]
    at_end, total = last_epoch_share(history)
    if total == 0:
        return [section.say("Every model was trained for a single epoch.", "muted")]
    section.say(
        f"{at_end} of {total} trained models (distinct runs x seeds) reached their lowest validation loss at their last epoch.",
        "contradicted" if at_end > total / 2 else "muted",
    )
    if at_end > total / 2:
        section.say(
            "Most models were still improving when training stopped: training was probably too short for them "
            "(raise training.epochs; early stopping keeps the best epoch either way), and an ablation's effect may "
            "partly be an effect on how fast the model learns."
        )
    return [section]


def knockout_section(inputs: ReportInputs) -> list[SectionContent]:
    knockout = inputs.tables.get("knockout")
    if knockout is None or knockout.empty:
        return []
    conv = set(knockout.loc[(knockout["metric"] == "spatial_axes") & (knockout["value"] > 0), "layer"])
    removed = "Hidden units" + (f" (channels of the conv layers {', '.join(sorted(conv))}, each at every position)" if conv else "")
    section = SectionContent("knockout", "Post-hoc knockout").say(
        f"{removed} removed from each trained model, with no retraining: the removed units output the fill value, "
        "every other weight is as trained. Orderings and fills are fitted on the training and validation splits; only "
        "the test split is scored. Area: the accuracy curve's area over the fraction range (the intact model's accuracy when removing units costs nothing)."
    )
    section.figures = [{"alt": "knockout curves", "data": _png(p)} for p in inputs.figures.get("knockout", [])]
    areas = knockout[knockout["metric"] == "area"]
    table = (
        areas.groupby(["family", "variant", "layer", "fill", "ordering"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    )
    table["area (mean)"] = table["mean"].map("{:.3f}".format)
    table["sd over seeds and draws"] = table["std"].map(lambda v: _fmt(v, "{:.3f}"))
    section.add_table(_html_table(table.drop(columns=["mean", "std"]).rename(columns={"count": "curves"})))
    dropout = areas[(areas["family"] == "dropout") & (areas["ordering"] == "random")]
    if dropout["variant"].nunique() > 1:
        by_rate = dropout.groupby("variant")["value"].mean()
        best, worst = by_rate.idxmax(), by_rate.idxmin()
        section.say(
            "Does training with dropout buy robustness to removal? Random-order knockout area per dropout variant: "
            + ", ".join(f"{name} {value:.3f}" for name, value in by_rate.items())
            + f"; highest {best}, lowest {worst}."
        )
    per_class = class_drop_table(knockout)
    if len(per_class):
        section.say(
            "Per-class effects (random order, mean over seeds and draws): a knockout can leave mean accuracy nearly "
            "flat and wreck one class. The drop of each class's accuracy from the intact model, at each fraction:"
        )
        section.add_table(_html_table(per_class))
    stable = knockout[knockout["metric"].isin(["units", "dead_units", "always_active_units", "unchanged_without_dead_units"])]
    if len(stable):
        wide = stable.pivot_table(
            index=["family", "variant", "layer"], columns="metric", values="value", aggfunc="mean", sort=False
        ).reset_index()
        wide = wide.rename(columns={"units": "units or channels"})
        wide.insert(3, "unit", ["channel" if layer in conv else "unit" for layer in wide["layer"]])
        section.say(
            "Stable units (conv layers: channels, over every position), on the training split (mean over seeds): dead units are never active, and removing them "
            "leaves this share of test predictions unchanged (units dead on training can still fire on test inputs)."
        )
        section.add_table(_html_table(wide.round(3)))
    return [section]


def compensation_section(inputs: ReportInputs) -> list[SectionContent]:
    gaps = inputs.tables.get("compensation")
    if gaps is None or gaps.empty:
        return []
    section = SectionContent("compensation", "Compensation: retrained vs removed after training").say(
        "Each point pairs a model retrained without a component with the trained baseline from which the same "
        "component was removed afterwards, on the same seeds; the gap is retrained minus post-hoc accuracy, with the "
        "unadjusted 95% interval the comparisons with the baseline use: seed noise of the paired gaps plus, where both "
        "sides have per-example predictions (input, noise), a paired bootstrap over test examples; the knocked-out "
        "side of the units comparison is a mean over random draws with none, so its interval is seed noise only. Post-hoc effects are lower bounds on a component's "
        "importance (downstream layers partly repair an ablation), while retraining lets the whole network compensate: "
        "a positive gap is compensation the retrain ablation hides."
    )
    section.figures = [{"alt": f"compensation {p}", "data": _png(p)} for p in inputs.figures.get("compensation", [])]
    shown = pd.DataFrame(
        {
            "comparison": gaps["comparison"],
            "point": gaps["label"],
            "retrained": gaps["retrained"].map(lambda v: _fmt(v, "{:.4f}")),
            "post-hoc": gaps["posthoc"].map(lambda v: _fmt(v, "{:.4f}")),
            "gap": gaps["gap"].map(_fmt),
            "gap 95% CI": [_interval(a, b) for a, b in zip(gaps["gap_ci_low"], gaps["gap_ci_high"], strict=True)],
            "seeds": gaps["seeds"],
        }
    )
    section.add_table(_html_table(shown))
    return [section]


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
    section.figures = [{"alt": "reliability diagrams", "data": _png(p)} for p in inputs.figures.get("calibration", [])]
    summary = calibration[~calibration["metric"].str.startswith("bin_")]
    wide = summary.pivot_table(index=["family", "variant"], columns="metric", values="value", aggfunc="mean", sort=False).reset_index()
    columns = ["family", "variant", "ece", "ks_error", "brier", "nll", "temperature", "ece_scaled", "nll_scaled"]
    section.add_table(_html_table(wide[[c for c in columns if c in wide]].round(4)))
    return [section]


def _error_cell(row: Any) -> str:
    """Error rate in percent with its interval, as the write-up's table prints it."""
    return f"{100 * row.error_rate:.2f} " + _interval(100 * row.error_low, 100 * row.error_high, "{:.2f}")


def nsdropout_table(summary: pd.DataFrame, labels: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The write-up's format: one row per layer and inference mode, error (%) per dataset (this study's)."""
    from ablation_lab.nsdropout import MODE_TITLES

    table = summary.merge(labels, on=["family", "variant"], how="left")
    return pd.DataFrame(
        {
            "layer": table["label"].fillna(table["variant"]),
            "inference": table["mode"].map(MODE_TITLES),
            "seeds": table["seeds"],
            f"{dataset}: test error % [95% CI]": [_error_cell(row) for row in table.itertuples()],
            "accuracy minus oracle [95% CI]": [
                ""
                if pd.isna(getattr(row, "minus_oracle", float("nan")))
                else f"{row.minus_oracle:+.4f} " + _interval(row.minus_oracle_low, row.minus_oracle_high)
                for row in table.itertuples()
            ],
        }
    )


def nsdropout_verdicts(summary: pd.DataFrame, dependence: pd.DataFrame, n_classes: int) -> list[str]:
    """One sentence per NSDropout model: the oracle's error, the best label-free one, and mask dependence."""
    from ablation_lab.nsdropout import LABEL_FREE, ORACLE

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
        {"alt": "NSDropout error by inference mode and mask dependence", "data": _png(p)} for p in inputs.figures.get("nsdropout_modes", [])
    ]
    section.add_table(_html_table(nsdropout_table(summary, labels, dataset)))
    n_classes = len(inputs.meta.get("class_names", [])) or 10
    for sentence in nsdropout_verdicts(
        summary, table if table is not None else pd.DataFrame(columns=["variant", "metric", "value"]), n_classes
    ):
        section.say(sentence)
    methods = summary["method"].iloc[0] if "method" in summary and len(summary) else ""
    section.say(f"Intervals: {methods}; same test examples and models in every mode.", "muted")
    return [section]


def activation_shapes_section(inputs: ReportInputs) -> list[SectionContent]:
    shapes = inputs.tables.get("activation_shapes")
    if shapes is None or shapes.empty:
        return []
    from ablation_lab.learnable import change_table

    section = SectionContent("activation_shapes", "Learned activation shapes").say(
        "The learnable activations of the functional ablation: each trained model's function on a grid of "
        "pre-activations, against the function it started as (dashed) and the fixed activations (grey). Their "
        "accuracy, with intervals, is in the functional ablation's table; here is what they learned. Outside the "
        "grid each function extrapolates linearly."
    )
    section.figures = [{"alt": "learned activation functions", "data": _png(p)} for p in inputs.figures.get("activation_shapes", [])]
    if (shapes["layer"] == "feature_functions").any():
        section.say(
            "The KST model (kind kst) learns one function of each input feature before its sums: the second figure shows "
            "them, one panel per feature, a partial explanation of what the model does with each feature."
        )
    moved = change_table(shapes).rename(columns={"max_change": "max |learned - initial| on the grid (mean over seeds)"})
    section.add_table(_html_table(moved.round(4)))
    return [section]


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
    from ablation_lab.elasticity import claim_sentence, nonlinear_claim, variant_summary

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
    section.figures = [{"alt": "local elasticity", "data": _png(p)} for p in inputs.figures.get("elasticity", [])]
    summary = variant_summary(elasticity)
    shown = pd.DataFrame(
        {
            "variant": summary["family"] + "/" + summary["variant"],
            "seeds": summary["seeds"],
            "AUC": summary["auc_mean"].map(lambda v: _fmt(v, "{:.3f}")),
            "AUC 95% CI": [_interval(a, b, "{:.3f}") for a, b in zip(summary["auc_low"], summary["auc_high"], strict=True)],
            "ratio S_ker": summary["ratio_kernel_mean"].map(lambda v: _fmt(v, "{:.2f}")),
            "S_ker 95% CI": [
                _interval(a, b, "{:.2f}") for a, b in zip(summary["ratio_kernel_low"], summary["ratio_kernel_high"], strict=True)
            ],
            "ratio S_rel": summary["ratio_relative_mean"].map(lambda v: _fmt(v, "{:.2f}")),
            "S_rel 95% CI": [
                _interval(a, b, "{:.2f}") for a, b in zip(summary["ratio_relative_low"], summary["ratio_relative_high"], strict=True)
            ],
            "zero self-changes": summary.get("degenerate_rows", pd.Series(dtype=float)).map(lambda v: _fmt(v, "{:.0f}")),
            "first-order error": summary.get("first_order_error", pd.Series(dtype=float)).map(lambda v: _fmt(v, "{:.1e}")),
        }
    )
    section.add_table(_html_table(shown))
    section.say(
        "Clustering the sample into as many clusters as classes (mean over seeds): adjusted Rand index and NMI with the "
        "classes, of K-means on the rows of each symmetrised similarity matrix and of spectral clustering with it as "
        "affinity; K-means on the raw inputs of the same sample is the reference. K-means on the rows also sees each "
        "row's scale (a well-fitted example's row is near 0); spectral clustering reads the matrix as a graph."
    )
    columns = [f"{s}_{m}_{k}" for k in ("kernel", "relative") for m in ("kmeans", "spectral") for s in ("ari", "nmi")]
    columns += ["ari_kmeans_inputs", "nmi_kmeans_inputs"]
    clustering = summary[["family", "variant", *[c for c in columns if c in summary]]].round(3)
    section.add_table(_html_table(clustering))
    claim = nonlinear_claim(elasticity)
    if claim is None:
        return [section.say("No linear and non-linear activation variants were analysed: the paper's claim is not tested here.")]
    css = {"held": "held", "contradicted": "contradicted"}.get(claim["verdict"], "noise")
    return [section.say(claim_sentence(claim), css)]


def provenance_section(inputs: ReportInputs) -> list[SectionContent]:
    section = SectionContent("provenance", "Provenance").say(
        "Software: " + ", ".join(f"{k} {v}" for k, v in inputs.versions.items()), "muted"
    )
    if inputs.machine:
        commit = inputs.machine.get("commit") or "unknown (not a git checkout)"
        dirty = " with uncommitted edits" if inputs.machine.get("dirty") else ""
        section.say(
            f"Workflow commit {commit}{dirty}; machine {inputs.machine.get('host', '?')} "
            f"({inputs.machine.get('platform', '?')}, {inputs.machine.get('cpus', '?')} CPUs).",
            "muted",
        )
    runtimes = runtime_table(inputs.tables.get("benchmarks"))
    if len(runtimes):
        section.say(
            "Job runtimes per rule, wall seconds from Snakemake's benchmark files, as recorded when each job last ran "
            "(jobs reused from an earlier run or another study keep their times; the report's own job is not counted):"
        )
        section.add_table(_html_table(runtimes))
    section.details = {"summary": "Study config", "text": yaml.safe_dump(inputs.study, sort_keys=False)}
    return [section]


SECTIONS: list[Callable[[ReportInputs], list[SectionContent]]] = [
    overview_section,
    findings_section,
    family_sections,
    training_section,
    knockout_section,
    compensation_section,
    calibration_section,
    nsdropout_section,
    activation_shapes_section,
    elasticity_section,
    provenance_section,
]


def render(inputs: ReportInputs) -> str:
    """The page as a string; every user string is escaped by Jinja or by pandas."""
    sections = [content for build in SECTIONS for content in build(inputs)]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(PAGE).render(
        study=inputs.study["study"], dataset=dataset_label(inputs.study["dataset"]), sections=sections, sort_script=SORT_SCRIPT
    )
