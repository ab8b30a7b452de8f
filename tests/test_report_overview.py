"""The report's overview, sortable tables and provenance runtimes, on hand-made tables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from ablation_lab.report.figures import draw_forest, forest_rows
from ablation_lab.report.page import ReportInputs, dataset_label, family_table, main_findings, render, runtime_table
from ablation_lab.runtime.jobs import read_benchmarks
from ablation_lab.study import Study
from conftest import ROOT

VARIANTS = [
    {"family": "baseline", "variant": "reference", "label": "baseline"},
    {"family": "dropout", "variant": "rate-0", "label": "dropout 0"},
    {"family": "dropout", "variant": "rate-0.8", "label": "dropout 0.8"},
    {"family": "activation", "variant": "linear", "label": "linear"},
    {"family": "activation", "variant": "tanh", "label": "tanh"},
]


def comparisons() -> pd.DataFrame:
    """Deliberately out of variant order, with a different unadjusted interval to catch a wrong column."""
    return pd.DataFrame(
        {
            "family": ["activation", "activation", "dropout", "dropout"],
            "variant": ["tanh", "linear", "rate-0", "rate-0.8"],
            "difference": [0.004, -0.031, 0.0, -0.0225],
            "diff_ci_low": [-0.012, -0.047, 0.0, -0.0355],
            "diff_ci_high": [0.020, -0.015, 0.0, -0.0095],
            "diff_ci_low_unadjusted": [-0.009, -0.043, 0.0, -0.031],
            "diff_ci_high_unadjusted": [0.017, -0.019, 0.0, -0.014],
            "p_holm": [0.6, 0.004, 1.0, 0.01],
            "equivalence": ["inconclusive", "different", "equivalent", "different"],
            "margin": [0.01] * 4,
        }
    )


def summary() -> pd.DataFrame:
    rows = [(v["family"], v["variant"], v["label"], i) for i, v in enumerate(VARIANTS)]
    frame = pd.DataFrame(rows, columns=["family", "variant", "label", "order"])
    return frame.assign(seeds=2, diverged=0, accuracy_mean=0.9, accuracy_ci_low=0.88, accuracy_ci_high=0.92)


def runs() -> pd.DataFrame:
    """Two seeds per variant; dropout 0 is the baseline's own model (shares its run)."""
    run_of = {"reference": "base", "rate-0": "base", "rate-0.8": "d8", "linear": "lin", "tanh": "tanh"}
    return pd.DataFrame(
        [
            {
                "family": v["family"],
                "variant": v["variant"],
                "seed": seed,
                "run": run_of[v["variant"]],
                "status": "ok",
                "accuracy": 0.9,
                "macro_f1": 0.8 + 0.01 * seed + 0.1 * i,
                "loss": 0.3 + 0.1 * seed,
                "label": v["label"],
                "order": i,
            }
            for i, v in enumerate(VARIANTS)
            for seed in (1, 2)
        ]
    )


def test_the_forest_plot_draws_exactly_the_tables_intervals():
    rows = forest_rows(comparisons(), VARIANTS)
    assert rows["label"].tolist() == ["dropout: dropout 0", "dropout: dropout 0.8", "activation: linear", "activation: tanh"]
    table = comparisons().set_index(["family", "variant"])
    figure = draw_forest(rows)
    try:
        axes = figure.axes[0]
        ticks = [t.get_text() for t in axes.get_yticklabels()]
        drawn = {}
        for container in axes.containers:  # one errorbar container per verdict colour
            points = container.lines[0].get_xydata()
            segments = container.lines[2][0].get_segments()
            for (x, y), segment in zip(points, segments, strict=True):
                label = ticks[len(ticks) - 1 - round(float(y))]
                drawn[label] = (x, segment[0][0], segment[1][0])
        assert len(drawn) == 4
        for row in rows.itertuples():
            expected = table.loc[(row.family, row.variant), ["difference", "diff_ci_low", "diff_ci_high"]].to_numpy(dtype=float)
            np.testing.assert_allclose(drawn[row.label], expected, rtol=0, atol=1e-12)
    finally:
        plt.close(figure)


def test_main_findings_name_the_most_and_least_harmful_from_the_comparisons():
    lines = main_findings(summary(), comparisons(), runs())
    assert len(lines) == 3
    assert lines[0].startswith("Most harmful ablation: linear (activation): -0.0310") and "[-0.0470, -0.0150]" in lines[0]
    # dropout 0 is the baseline's own model with a zero difference: no ablation, so not "least harmful"
    assert lines[1].startswith("Least harmful ablation: tanh (activation): +0.0040") and "[-0.0120, +0.0200]" in lines[1]
    assert lines[1].endswith("(it scores above the baseline).")
    assert "Of 3 ablations" in lines[2] and "2 different" in lines[2] and "1 inconclusive" in lines[2]
    assert "1 variant(s) identical to the baseline" in lines[2]


def test_runtimes_are_summarised_per_rule_from_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    rows = []
    for i, seconds in enumerate([1.5, 2.5, 10.0]):
        path = tmp_path / f"train-{i}.tsv"
        path.write_text(header + f"{seconds}\t0:00:01\t1\t1\t1\t1\t0\t0\t0\t0.1\n")
        rows.append({"rule": "train", "path": str(path)})
    (tmp_path / "agg.tsv").write_text(header + "0.75\t0:00:00\t1\t1\t1\t1\t0\t0\t0\t0.1\n")
    rows.append({"rule": "aggregate", "path": str(tmp_path / "agg.tsv")})
    table = runtime_table(read_benchmarks(rows)).set_index("rule")
    assert table.loc["train"].to_dict() == {"jobs": 3, "total s": 14.0, "median s": 2.5, "max s": 10.0}
    assert table.loc["aggregate", "jobs"] == 1 and table.index[0] == "train", "largest total first"


def test_the_report_reads_the_benchmarks_of_every_upstream_job_but_its_own(test_config):
    study = Study.from_config(test_config)
    rows = study.benchmark_table(["aggregate", "plot_figures"])
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a job shared by several variants is counted once"
    assert study.study_benchmark("report") not in paths
    assert sum(row["rule"] == "train" for row in rows) == len(study.runs) * len(study.seeds)
    assert {row["rule"] for row in rows} >= {"prepare_data", "analyse_run (evaluation)", "aggregate"}


def test_a_csv_study_is_titled_by_its_data_file():
    assert dataset_label({"name": "csv", "path": "/data/wine quality.csv"}) == "wine quality.csv"
    assert dataset_label({"name": "npz", "path": "x/arrays.npz"}) == "arrays.npz"
    assert dataset_label({"name": "mnist5k", "path": None}) == "mnist5k"


def html_table(html: str) -> pd.DataFrame:
    """A pandas-written HTML table back as a frame of strings (pandas.read_html needs lxml)."""
    header = re.findall(r"<th>(.*?)</th>", html)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
    return pd.DataFrame([row for row in rows if row], columns=header)


def test_family_tables_offer_macro_f1_and_loss_beside_accuracy():
    html = family_table(summary(), comparisons(), "activation", runs())
    frame = html_table(html)
    assert {"accuracy (mean)", "macro F1 (mean)", "loss (mean)"} <= set(frame.columns)
    linear = frame[frame["variant"] == "linear"].iloc[0]
    assert float(linear["macro F1 (mean)"]) == pytest.approx(0.815 + 0.3) and float(linear["loss (mean)"]) == pytest.approx(0.45)


def page(title_path: str = "/data/<b>table.csv") -> str:
    inputs = ReportInputs(
        study={"study": "s", "seeds": [1, 2], "dataset": {"name": "csv", "path": title_path}, "model": {"hidden_units": [8]}},
        meta={"sizes": {"test": 10}},
        tables={"summary": summary(), "comparisons": comparisons(), "runs": runs(), "findings": pd.DataFrame(columns=["claim"])},
    )
    return render(inputs)


def test_the_page_sorts_its_tables_with_an_inline_script_and_escapes_the_title():
    html = page()
    assert "<title>Ablation study s on &lt;b&gt;table.csv</title>" in html
    assert html.count("<script>") == 1 and "sortBy(table, header, column)" in html
    assert "http" not in html.split("<script>")[1], "no network: the script loads nothing"
    assert "Most harmful ablation: linear (activation)" in html


def test_make_run_ends_with_the_findings_then_the_report_path():
    recipe = (ROOT / "Makefile").read_text().split("\nrun:")[1].split("\n\n")[0]
    assert recipe.index("ablation_lab findings $(CONFIG)") < recipe.index("HTML report:")


def findings_cli(cwd: Path) -> subprocess.CompletedProcess:
    """`python -m ablation_lab findings study.yaml` in `cwd`, with this checkout's package first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ablation_lab", "findings", "study.yaml"], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_the_findings_command_prints_three_numbered_findings(tmp_path, test_config):
    study = Study.from_config(test_config)
    tables = tmp_path / study.tables_dir()
    tables.mkdir(parents=True)
    summary().to_csv(tables / "summary.csv", index=False)
    comparisons().to_csv(tables / "comparisons.csv", index=False)
    runs().to_csv(tables / "runs.csv", index=False)
    (tmp_path / "study.yaml").write_text((ROOT / "config" / "test.yaml").read_text())
    done = findings_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Main findings of study smoke:" and [line[:5] for line in lines[1:]] == ["  1. ", "  2. ", "  3. "]
    assert "Most harmful ablation: linear" in lines[1]
    empty = tmp_path / "not-run-yet"
    empty.mkdir()
    (empty / "study.yaml").write_text((ROOT / "config" / "test.yaml").read_text())
    missing = findings_cli(empty)
    assert missing.returncode == 2 and "summary.csv" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def fake_tools(folder: Path, *names: str) -> None:
    """Executables that only record that they ran (in `calls`)."""
    folder.mkdir(exist_ok=True)
    for name in names:
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{folder}/calls"\n')
        tool.chmod(0o755)


def test_make_test_installs_chromium_only_when_it_is_missing(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    present, missing = tmp_path / "present", tmp_path / "missing"
    fake_tools(present, "chromium", "chromedriver", "apt-get")
    fake_tools(missing, "apt-get")
    for folder in (present, missing):  # make runs its recipes with /bin/sh: PATH holds only the fakes
        done = subprocess.run([make, "-s", "browser"], cwd=ROOT, env={"PATH": str(folder)}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert not (present / "calls").exists(), "chromium and its driver present: nothing is installed"
    calls = (missing / "calls").read_text().splitlines()
    assert calls[0].startswith("apt-get update") and "install -y -qq chromium chromium-driver" in calls[1]


def test_provenance_names_the_commit_and_the_machine():
    inputs = ReportInputs(
        study={"study": "s", "seeds": [1], "dataset": {"name": "digits"}},
        meta={"sizes": {"test": 10}},
        tables={"summary": summary(), "comparisons": comparisons(), "runs": runs(), "findings": pd.DataFrame(columns=["claim"])},
        machine={"commit": "0123abc", "dirty": True, "host": "<lab>", "platform": "Linux-6", "cpus": 2},
    )
    html = render(inputs)
    assert "Workflow commit 0123abc with uncommitted edits; machine &lt;lab&gt; (Linux-6, 2 CPUs)." in html


@pytest.mark.workflow
def test_the_test_studys_report_leads_with_its_findings_and_times_its_jobs(smoke_study):
    """End to end: the overview's sentences come from its comparisons table, the runtimes from every upstream job."""
    import html as html_module

    workdir, config = smoke_study
    reports = workdir / "reports" / config["study"]
    page = html_module.unescape((reports / "report.html").read_text())
    tables = {name: pd.read_csv(reports / "tables" / f"{name}.csv") for name in ("summary", "comparisons", "runs")}
    for line in main_findings(tables["summary"], tables["comparisons"], tables["runs"]):
        assert line in page
    overview = page[page.index('id="overview"') : page.index('id="findings"')]
    assert 'alt="forest plot' in overview and "Jobs before the report took" in overview
    provenance = page[page.index('id="provenance"') :]
    study = Study.from_config(config)
    assert f"<td>train</td>\n      <td>{len(study.runs) * len(study.seeds)}</td>" in provenance
    assert "<td>aggregate</td>" in provenance and "<td>report_html</td>" not in provenance
