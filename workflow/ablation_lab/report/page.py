"""The study's self-contained HTML report: the page engine and the study's own sections.

A section is one function from the report's named inputs to the content of zero or more
`<section>` blocks (report/sections.py). The page opens with the overview, the findings,
one section per family and training; then come the sections of each registered analysis
(each analysis module owns its own); provenance closes it. The markup is the Jinja2
template `templates/page.html.j2`; the table-sorting script is `templates/sort.js`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ablation_lab.ablations import BASELINE, DERIVED, FAMILIES
from ablation_lab.report.sections import ReportInputs, SectionContent, fmt, html_table, interval, png
from ablation_lab.specs import ModelSpec

TEMPLATES = Path(__file__).parent / "templates"  # the page's Jinja2 template and its sort script


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
            "95% CI": [interval(a, b, "{:.4f}") for a, b in zip(table["accuracy_ci_low"], table["accuracy_ci_high"], strict=True)],
            "vs baseline": table["difference"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"),
            "diff CI (Holm)": [interval(a, b) for a, b in zip(table["diff_ci_low"], table["diff_ci_high"], strict=True)],
            "p (Holm)": table["p_holm"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
            "verdict (this interval)": table.get("equivalence", pd.Series([""] * len(table))).fillna(""),
        }
    )
    for column, name in (("macro_f1", "macro F1 (mean)"), ("loss", "loss (mean)")):
        if column in table:
            shown[name] = table[column].map(lambda v: fmt(v, "{:.4f}"))
    return html_table(shown)


def methods_text(comparisons: pd.DataFrame, seeds: int, margin: float) -> str:
    """How every interval and test of the report was made (statistics/inference.py decides them all)."""
    text = (
        "Each variant is compared with the baseline by its own paired differences (same seeds, same test examples): "
        "the variance is the seed-to-seed variance of those differences plus the test sample's own, from a paired "
        "bootstrap over test examples; intervals and p-values are Holm-adjusted within each family, so an interval "
        "excludes 0 exactly when its adjusted p is below 0.05. Accuracy intervals stay inside [0, 1]. "
        f"Each verdict is read off the Holm interval printed beside it, against 0 and against the equivalence margin "
        f"+-{margin:g} accuracy (Lakens' four outcomes): equivalent (inside the margin, containing 0), different within "
        "margin (excluding 0 but inside the margin: real but negligible), different (excluding 0, reaching beyond the "
        "margin), inconclusive (containing 0, reaching beyond the margin). 'No effect' is only ever 'equivalent'. "
        "Degrees of freedom are the seeds' (seeds - 1) even when test-sample noise is added, so adding that noise "
        "never narrows an interval."
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
    """What the data is called on the page: the file's or folder's name for a user's data (the format says little)."""
    if dataset.get("name") in ("csv", "npz", "parquet", "images") and dataset.get("path"):
        return Path(str(dataset["path"])).name
    return str(dataset["name"])


def class_list(names: list[str], limit: int = 12) -> str:
    """The classes by name where the data names them (an image folder's subfolders, a table's labels), not as 0..K-1."""
    if not names or all(str(name).lstrip("-").isdigit() for name in names):
        return ""
    shown = ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"; {len(names)} classes: {shown}"


def runtime_table(benchmarks: pd.DataFrame | None) -> pd.DataFrame:
    """Per rule: jobs, total and median wall seconds, from Snakemake's benchmark files (one row per job)."""
    if benchmarks is None or benchmarks.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total s", "median s", "max s"])
    grouped = benchmarks.groupby("rule", sort=False)["s"]
    table = grouped.agg(["count", "sum", "median", "max"]).reset_index()
    table.columns = ["rule", "jobs", "total s", "median s", "max s"]
    return table.sort_values("total s", ascending=False, ignore_index=True).round({"total s": 1, "median s": 2, "max s": 2})


def model_label(model: Mapping[str, Any], source: dict[str, str] | None) -> str:
    """The baseline model in words; a model file or builder is named with its content digest."""
    if source and source["kind"] == "file":
        weights = "its own saved weights for the baseline" if source.get("weights") == "as_saved" else "retrained from fresh weights"
        return f"the model file {source['path']} (sha256 {source['sha256']}), {weights}"
    spec = ModelSpec.of(model)
    layers = "-".join(str(units) for units in spec.hidden_units) or "no hidden layer"
    head = f"{layers} {spec.activation}, dropout {spec.dropout:g}"
    if source and source["kind"] == "builder":
        return f"builder {spec.builder} ({source['path']}, sha256 {source['sha256']}), hidden {head}"
    widths = "-".join(str(f) for f in spec.filters or ())
    if spec.kind == "resnet":
        return f"pre-activation ResNet, {spec.blocks} residual blocks of {widths} channels, {spec.activation}, dropout {spec.dropout:g}"
    if spec.kind == "cnn":
        return f"CNN with conv blocks of {widths} filters, then dense {head}"
    return f"{'KST' if spec.kind == 'kst' else 'MLP'} {head}"


def study_summary(inputs: ReportInputs) -> str:
    """One line a reader can check the study against: data, model, training, variants, seeds, job time."""
    study, runs = inputs.study, inputs.tables["runs"]
    model, training = study.get("model", {}), study.get("training", {})
    seeds = study["seeds"]
    sizes = ", ".join(f"{k} {v}" for k, v in inputs.meta["sizes"].items())
    trained = runs[["run", "seed"]].drop_duplicates() if "run" in runs else runs
    text = (
        f"Data: {dataset_label(study['dataset'])} ({sizes}{class_list(inputs.meta.get('class_names', []))}). Model: {model_label(model, inputs.model_source)}; "
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
            f"{interval(row.diff_ci_low, row.diff_ci_high)}; {verdict}"
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
        section.add_table(html_table(shared))
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
            "95% interval": [interval(a, b) for a, b in zip(findings["ci_low"], findings["ci_high"], strict=True)],
            "seeds": findings["seeds"],
            "verdict": findings["verdict"],
            "how": findings["detail"],
        }
    )
    section.add_table(html_table(shown))
    return [section]


def family_sections(inputs: ReportInputs) -> list[SectionContent]:
    summary, comparisons = inputs.tables["summary"], inputs.tables["comparisons"]
    out = []
    for family in summary["family"].drop_duplicates():
        title, description = family_title(family)
        section = SectionContent(f"family-{family}", title).say(description)
        section.figures = [{"alt": f"{family} figure {i + 1}", "data": png(p)} for i, p in enumerate(inputs.figures.get(family, []))]
        section.add_table(family_table(summary, comparisons, family, inputs.tables.get("runs")))
        out.append(section)
    return out


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
    section.figures = [{"alt": "learning curves", "data": png(p)} for p in inputs.figures.get("learning_curves", [])]
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
        section.add_table(html_table(runtimes))
    section.details = {"summary": "Study config", "text": yaml.safe_dump(inputs.study, sort_keys=False)}
    return [section]


# The page's own sections, around those of the analyses (each analysis module owns its own).
OPENING: list[Callable[[ReportInputs], list[SectionContent]]] = [overview_section, findings_section, family_sections, training_section]
CLOSING: list[Callable[[ReportInputs], list[SectionContent]]] = [provenance_section]


def section_builders() -> list[Callable[[ReportInputs], list[SectionContent]]]:
    """Every section, in page order: the opening, each registered analysis's sections, provenance."""
    from ablation_lab.analyses.registry import ANALYSES

    return [*OPENING, *(build for analysis in ANALYSES.values() for build in analysis.sections), *CLOSING]


def render(inputs: ReportInputs) -> str:
    """The page as a string; every user string is escaped by Jinja or by pandas."""
    sections = [content for build in section_builders() for content in build(inputs)]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))
    return env.get_template("page.html.j2").render(
        study=inputs.study["study"],
        dataset=dataset_label(inputs.study["dataset"]),
        sections=sections,
        sort_script=(TEMPLATES / "sort.js").read_text(),
    )
