"""Two finished studies side by side: `python -m ablation_lab compare <study-a.yaml> <study-b.yaml>`.

The question a researcher asks after a change (another data set, other training settings, a new
version of their model): which ablations did the same thing in both studies, and which changed?
The page matches variants by their id (`family/variant`), prints each study's difference from
its own baseline with the interval and verdict its own report printed (read from its
comparisons.csv, never recomputed), and, where the two studies share seeds and test split (the
same prepared data), the difference of the two differences, paired by seed and test example,
Holm-adjusted within each family (`statistics.tables.difference_of_differences`). Variants only
one study has are listed. A tidy CSV lies beside the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablation_lab.ablations import BASELINE
from ablation_lab.analyses.evaluation import EVALUATION
from ablation_lab.config import ConfigError
from ablation_lab.report.page import dataset_label
from ablation_lab.report.sections import SectionContent, html_table, interval

COMPARE_DIR = "compare"  # under the reports folder: reports/compare/<a>--<b>/


@dataclass
class StudyResults:
    """A finished study: its config, its runs and baseline comparisons, and its test hit vectors."""

    config: dict[str, Any]
    data_key: str
    runs: pd.DataFrame
    comparisons: pd.DataFrame
    hits: dict[tuple[str, str, int], Any] | None

    @property
    def name(self) -> str:
        return str(self.config["study"])


def load_results(config: dict[str, Any], source: str) -> StudyResults:
    """A study's aggregated tables and hit vectors; one line naming what is missing when it has not run."""
    from ablation_lab.runtime.jobs import collect_hits
    from ablation_lab.study import Study

    study = Study.from_config(config)
    tables = Path(study.tables_dir())
    for name in ("runs", "comparisons"):
        if not (tables / f"{name}.csv").exists():
            raise ConfigError(
                f"study {study.name!r} ({source}) has no {tables / f'{name}.csv'}: run it first "
                f"(snakemake --cores 2 --configfile {source}), then compare"
            )
    probes = [row for row in study.probe_table() if row["analysis"] == EVALUATION]
    hits = collect_hits(probes) if all(Path(row["arrays"]).exists() for row in probes) else None
    return StudyResults(config, study.data_key, pd.read_csv(tables / "runs.csv"), pd.read_csv(tables / "comparisons.csv"), hits)


def pairing(a: StudyResults, b: StudyResults) -> str | None:
    """Why the two studies cannot be paired by seed and test example, or None when they can."""
    if a.data_key != b.data_key:
        return f"they split different data ({a.data_key} and {b.data_key}), so their test examples differ"
    shared = set(a.runs["seed"]) & set(b.runs["seed"])
    if len(shared) < 2:
        return f"they share {len(shared)} seed(s); a paired interval needs 2 or more"
    return None


def _variants(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(table["family"], table["variant"], strict=True)))


def compare_table(a: StudyResults, b: StudyResults) -> pd.DataFrame:
    """One row per variant of either study (the baseline aside): each side's difference from its
    own baseline as its report printed it, and the difference of differences where paired."""
    from ablation_lab.statistics.tables import difference_of_differences

    keys_a, keys_b = _variants(a.comparisons), _variants(b.comparisons)
    keys = [k for k in dict.fromkeys(keys_a + keys_b) if k[0] != BASELINE]
    side = {}
    for label, results in (("a", a), ("b", b)):
        table = results.comparisons.set_index(["family", "variant"])
        columns = {"difference": "difference", "diff_ci_low": "low", "diff_ci_high": "high", "equivalence": "verdict"}
        side[label] = table[list(columns)].rename(columns={k: f"{label}_{v}" for k, v in columns.items()})
    frame = pd.DataFrame(keys, columns=["family", "variant"])
    frame["in"] = ["both" if k in keys_a and k in keys_b else ("only " + (a.name if k in keys_a else b.name)) for k in keys]
    frame = frame.join(side["a"], on=["family", "variant"]).join(side["b"], on=["family", "variant"])
    matched = [k for k in keys if k in keys_a and k in keys_b]
    if pairing(a, b) is None and matched:
        margin = float(a.config["equivalence_margin"])
        dd = difference_of_differences(a.runs, b.runs, matched, "accuracy", hits_a=a.hits, hits_b=b.hits, margin=margin)
        frame = frame.merge(dd.rename(columns={"equivalence": "dd_verdict", "method": "dd_method"}), on=["family", "variant"], how="left")
    return frame


def _overview(a: StudyResults, b: StudyResults, table: pd.DataFrame) -> SectionContent:
    section = SectionContent("overview", "Overview")
    for label, results in (("A", a), ("B", b)):
        seeds = sorted(set(results.runs["seed"]))
        section.say(
            f"Study {label}: {results.name} on {dataset_label(results.config['dataset'])} (data {results.data_key}), "
            f"seeds {', '.join(map(str, seeds))}, {len(_variants(results.comparisons))} compared variants."
        )
    matched = int((table["in"] == "both").sum())
    reason = pairing(a, b)
    paired = (
        f"The two share seeds and test split, so each matched variant also gets the difference of its two effects on test accuracy, "
        "(A variant - A baseline) - (B variant - B baseline), paired by seed and test example, with a Holm-adjusted 95% interval "
        f"within each family; its verdict is read off that interval against 0 and +-{a.config['equivalence_margin']}."
        if reason is None
        else f"No difference of differences: {reason}. Each study's effect is shown with its own interval."
    )
    section.say(f"{matched} variants are in both studies, {len(table) - matched} in one only. {paired}")
    return section


def _matched(table: pd.DataFrame) -> SectionContent:
    section = SectionContent("matched", "Variants in both studies")
    rows = table[table["in"] == "both"]
    shown = pd.DataFrame(
        {
            "family": rows["family"],
            "variant": rows["variant"],
            "A: difference": rows["a_difference"].map("{:+.4f}".format),
            "A: interval": [interval(lo, hi) for lo, hi in zip(rows["a_low"], rows["a_high"], strict=True)],
            "A: verdict": rows["a_verdict"],
            "B: difference": rows["b_difference"].map("{:+.4f}".format),
            "B: interval": [interval(lo, hi) for lo, hi in zip(rows["b_low"], rows["b_high"], strict=True)],
            "B: verdict": rows["b_verdict"],
        }
    )
    if "dd" in rows:
        shown["A - B"] = rows["dd"].map("{:+.4f}".format)
        shown["A - B: interval (Holm)"] = [interval(lo, hi) for lo, hi in zip(rows["dd_ci_low"], rows["dd_ci_high"], strict=True)]
        shown["A - B: verdict"] = rows["dd_verdict"]
    section.say("Each study's interval and verdict are the ones its own report printed (Holm within the family).", "muted")
    return section.add_table(html_table(shown) if len(shown) else "<p>No variant is in both studies.</p>")


def _unmatched(table: pd.DataFrame) -> SectionContent:
    section = SectionContent("unmatched", "Variants in one study only")
    rows = table[table["in"] != "both"]
    if rows.empty:
        return section.say("None: every variant is in both studies.")
    return section.add_table(html_table(rows[["family", "variant", "in"]].rename(columns={"in": "only in"})))


def render(a: StudyResults, b: StudyResults, table: pd.DataFrame) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from ablation_lab.report.page import TEMPLATES

    sections = [_overview(a, b, table), _matched(table), _unmatched(table)]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))
    return env.get_template("page.html.j2").render(
        study=f"{a.name} vs {b.name}",
        dataset=f"{dataset_label(a.config['dataset'])} / {dataset_label(b.config['dataset'])}",
        sections=sections,
        sort_script=(TEMPLATES / "sort.js").read_text(),
    )


def compare(config_a: dict[str, Any], source_a: str, config_b: dict[str, Any], source_b: str) -> Path:
    """Write reports/compare/<a>--<b>/compare.html and compare.csv; returns the page's path."""
    if Path(source_a).resolve() == Path(source_b).resolve():
        raise ConfigError(f"{source_a} is compared with itself; name two different study files")
    a, b = load_results(config_a, source_a), load_results(config_b, source_b)
    table = compare_table(a, b)
    from ablation_lab.study import REPORTS

    out = Path(REPORTS) / COMPARE_DIR / f"{a.name}--{b.name}"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    (out / "compare.html").write_text(render(a, b, table), encoding="utf-8")
    return out / "compare.html"
