"""Adding an analysis is one new module (plus its schema block): the worked example of docs/extending.md.

The workflow test at the end does it for real: a copy of the checkout gets the module and
the block, nothing else, and `snakemake` runs it through to the report.

A copy of the package gets one new file, `analyses/max_probability.py` (the toy below); with
nothing else edited, the registry finds it, a study plans one job per trained model for it,
its `run` gets its typed parameters, the aggregation writes its table and the report shows
its section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

TOY = '''
"""Toy analysis: how confident each model is on the test split (docs/extending.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ablation_lab.analyses.base import Analysis, Params
from ablation_lab.report.sections import SectionContent, html_table


@dataclass(frozen=True)
class MaxProbabilityParams(Params):
    split: str  # whose probabilities are read


def params(config):  # plain data: part of each probe's identity (a real one reads its config block)
    return {"split": "test"}


def run(context, params: MaxProbabilityParams):
    top = context.probabilities(params.split).max(axis=1)
    return pd.DataFrame({"metric": ["mean_max_probability"], "value": [float(top.mean())]})


def section(inputs):
    table = inputs.tables.get("max_probability")
    if table is None or table.empty:
        return []
    mean = table.groupby(["family", "variant"], sort=False)["value"].mean().reset_index()
    return [SectionContent("max_probability", "Confidence").say("Mean top-class probability on test.").add_table(html_table(mean))]


ANALYSIS = Analysis(
    "max_probability", "Confidence", "Mean top-class probability on the test split.", run, params, MaxProbabilityParams, sections=(section,)
)
'''

CHECK = """
import json, sys
import numpy as np, pandas as pd
from ablation_lab.analyses.registry import ANALYSES, run_analysis
from ablation_lab.config import load_config_file
from ablation_lab.report.page import render
from ablation_lab.report.sections import ReportInputs
from ablation_lab.study import Study

study = Study.from_config(load_config_file(sys.argv[1]))

class Context:  # what a trained model's job would hand the analysis
    def probabilities(self, split):
        assert split == "test"
        return np.array([[0.9, 0.1], [0.4, 0.6]])

table, arrays = run_analysis("max_probability", Context(), {"split": "test"})  # as the job's request carries them
joined = table.assign(family="baseline", variant="baseline", seed=1)
summary = pd.DataFrame([{"family": "baseline", "variant": "baseline", "label": "baseline", "order": 0, "seeds": 1, "diverged": 0,
                         "accuracy_mean": 0.9, "accuracy_ci_low": 0.8, "accuracy_ci_high": 1.0}])
comparisons = pd.DataFrame(columns=["family", "variant", "difference", "diff_ci_low", "diff_ci_high", "p_holm"])
runs = pd.DataFrame([{"family": "baseline", "variant": "baseline", "seed": 1, "run": "r", "status": "ok"}])
findings = pd.DataFrame(columns=["claim", "estimate", "ci_low", "ci_high", "seeds", "verdict", "detail"])
tables = {"summary": summary, "comparisons": comparisons, "runs": runs, "findings": findings, "max_probability": joined}
page = render(ReportInputs(study={"study": "s", "seeds": [1], "dataset": {"name": "csv"}}, meta={"sizes": {"test": 2}}, tables=tables))
print(json.dumps({
    "registered": list(ANALYSES),
    "planned": [row["path"] for row in study.probe_table() if row["analysis"] == "max_probability"],
    "tables": list(study.extra_tables()),
    "value": float(table["value"].iloc[0]),
    "section": '<section id="max_probability">' in page and "Mean top-class probability on test." in page,
}))
"""


def test_a_new_analysis_is_one_module(tmp_path):
    package = tmp_path / "ablation_lab"
    shutil.copytree(ROOT / "workflow" / "ablation_lab", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "workflow" / "schemas", tmp_path / "schemas")
    (package / "analyses" / "max_probability.py").write_text(textwrap.dedent(TOY))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(ROOT / "config" / "test.yaml")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["registered"][-1] == "max_probability" and seen["registered"][0] == "evaluation"
    assert seen["planned"] and all("/max_probability/" in path for path in seen["planned"])
    assert "max_probability" in seen["tables"]
    assert seen["value"] == (0.9 + 0.6) / 2
    assert seen["section"]


def test_an_analysis_named_unlike_its_module_is_refused(tmp_path):
    package = tmp_path / "ablation_lab"
    shutil.copytree(ROOT / "workflow" / "ablation_lab", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "analyses" / "toy.py").write_text(textwrap.dedent(TOY))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "import ablation_lab.analyses.registry"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "analyses/toy.py: its ANALYSIS is named 'max_probability'" in result.stderr.strip().splitlines()[-1]


WORKFLOW_TOY = '''
"""Toy analysis with a config block and a figure (tests/test_extending.py, docs/extending.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ablation_lab.analyses.base import Analysis, Params
from ablation_lab.report.sections import SectionContent, html_table


@dataclass(frozen=True)
class MaxProbabilityParams(Params):
    config_key = "max_probability"

    split: str  # whose probabilities are read


def params(config):
    block = config.get("max_probability")
    return {"split": block["split"]} if block else None


def run(context, params: MaxProbabilityParams):
    top = context.probabilities(params.split).max(axis=1)
    return pd.DataFrame({"metric": ["mean_max_probability"], "value": [float(top.mean())]})


def plot(tables, variants, out):
    from ablation_lab.report.figures import plt, save_figure

    table = pd.read_csv(tables["max_probability"])
    figure, axes = plt.subplots()
    axes.bar(table["variant"], table["value"])
    save_figure(figure, out["max_probability"])


def section(inputs):
    table = inputs.tables.get("max_probability")
    if table is None or table.empty:
        return []
    mean = table.groupby(["family", "variant"], sort=False)["value"].mean().reset_index()
    content = SectionContent("max_probability", "Confidence").say("Mean top-class probability.").add_table(html_table(mean))
    for path in inputs.figures.get("max_probability", []):
        content.add_figure(path, "mean top-class probability per variant")
    return [content]


ANALYSIS = Analysis(
    "max_probability",
    "Confidence",
    "Mean top-class probability.",
    run,
    params,
    MaxProbabilityParams,
    figures=lambda study: ["max_probability"],
    plot=plot,
    sections=(section,),
)
'''

SCHEMA_BLOCK = {
    "description": "Toy analysis (tests/test_extending.py): the mean top-class probability.",
    "type": ["object", "null"],
    "default": None,
    "additionalProperties": False,
    "properties": {"split": {"type": "string", "enum": ["val", "test"], "default": "test"}},
}


@pytest.mark.workflow
def test_a_new_analysis_with_its_schema_block_runs_in_the_workflow_and_reaches_the_report(tmp_path):
    """The whole claim of docs/extending.md: one new module plus one schema block, nothing else
    edited, and a Snakemake run plans its jobs, aggregates its table, draws its figure and
    shows its section."""
    import yaml
    from workflow_helpers import write_config

    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake")
    for part in ("workflow", "profiles", "config"):
        shutil.copytree(ROOT / part, repo / part, symlinks=True, ignore=ignore)
    for part in ("Snakefile", "environment.yml"):
        shutil.copy(ROOT / part, repo / part)
    (repo / "workflow" / "ablation_lab" / "analyses" / "max_probability.py").write_text(textwrap.dedent(WORKFLOW_TOY))
    schema_file = repo / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_file.read_text())
    schema["properties"]["max_probability"] = SCHEMA_BLOCK
    schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
    study = {
        "study": "toy",
        "seeds": [1],
        "dataset": {"name": "digits"},
        "training": {"epochs": 1, "early_stopping_patience": 0},
        "families": {"dropout": {"rates": [0.0, 0.5]}},
        "combinations": [],
        "max_probability": {},  # its one setting at the schema's default
    }
    config = write_config(tmp_path, study)
    command = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(repo / "Snakefile"), "--cores", "2"]
    done = subprocess.run([*command, "--configfile", str(config)], cwd=repo, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = repo / "reports" / "toy"
    table = pd.read_csv(report / "tables" / "max_probability.csv")
    assert sorted(table["variant"].unique()) == ["rate-0", "rate-0.5", "reference"] and table["value"].between(0.1, 1).all()
    assert (report / "figures" / "max-probability.png").stat().st_size > 1000
    page = (report / "report.html").read_text()
    section = page.split('<section id="max_probability">', 1)[1].split("</section>", 1)[0]
    assert "Mean top-class probability." in section and 'alt="mean top-class probability per variant"' in section
