"""Promises about the repository itself: rules, environment files, import costs."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from conftest import ROOT

RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for path in RULE_FILES:
        for match in re.finditer(r"^rule (\w+):\n((?:    .*\n|\n)+)", path.read_text(), flags=re.MULTILINE):
            blocks[match.group(1)] = match.group(2)
    return blocks


def test_every_rule_declares_resources():
    blocks = rule_blocks()
    assert {"prepare_data", "train", "analyse_run", "aggregate", "plot_figures", "plot_analyses", "plot_examples", "report_html"} <= set(
        blocks
    )
    for name, body in blocks.items():
        for directive in ("log:", "benchmark:", "threads:", "resources:", "mem_mb=", "runtime="):
            assert directive in body, f"rule {name} lacks {directive}"
        assert "script:" in body or 'f"{RUN_JOB} ' in body, f"rule {name} runs neither a script nor run_job.py"


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=;\[ ]", dep)[0].lower() for dep in project["dependencies"] + project["optional-dependencies"]["dev"]}
    wanted -= {"tensorflow"}  # the conda file names the CPU build; pyproject picks by platform
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            listed.add(re.split(r"[<>= ]", item)[0].lower())
    assert wanted <= listed, f"environment.yml lacks {sorted(wanted - listed)}"
    assert listed - {"python", "pip"} <= wanted, f"environment.yml has extra {sorted(listed - wanted - {'python', 'pip'})}"


def test_light_modules_do_not_import_tensorflow():
    """The Snakefile, aggregation, plots and report must not pay TensorFlow's start-up."""
    code = (
        "import sys, ablation_lab.study, ablation_lab.statistics.tables, ablation_lab.statistics.claims, ablation_lab.analyses.registry, ablation_lab.report.page, ablation_lab.report.figures, ablation_lab.runtime.jobs, ablation_lab.analyses.evaluation;"
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme


def test_cheap_rules_rerun_when_their_code_changes(tmp_path, monkeypatch):
    import shutil

    import ablation_lab

    package = tmp_path / "ablation_lab"
    shutil.copytree(ROOT / "workflow" / "ablation_lab", package)
    monkeypatch.setattr(ablation_lab, "__file__", str(package / "__init__.py"))
    before = ablation_lab.source_digest("statistics", "runtime.jobs", "report")
    assert before == ablation_lab.source_digest("statistics", "runtime.jobs", "report")
    (package / "statistics" / "inference.py").write_text((package / "statistics" / "inference.py").read_text() + "\n# edited\n")
    assert ablation_lab.source_digest("statistics", "runtime.jobs", "report") != before
    edited = ablation_lab.source_digest("statistics", "runtime.jobs", "report")
    template = next((package / "report").rglob("*.j2"), package / "report" / "sections.py")
    template.write_text(template.read_text() + "\n")
    assert ablation_lab.source_digest("statistics", "runtime.jobs", "report") != edited, "a sub-package digests every file in it"
    rules = (ROOT / "workflow" / "rules" / "report.smk").read_text() + (ROOT / "workflow" / "rules" / "analyses.smk").read_text()
    digested = {name for call in re.findall(r"source_digest\(([^)]*)\)", rules) for name in re.findall(r'"([\w.]+)"', call)}
    assert {"statistics", "report.figures", "report", "analyses"} <= digested
    from ablation_lab.analyses.registry import ANALYSES

    assert "code=analysis_code" in rules  # each analysis's own module and what it names in `code`
    assert all(f"analyses.{name}" in analysis.modules for name, analysis in ANALYSES.items())
    assert "source_digest" not in (ROOT / "workflow" / "rules" / "train.smk").read_text()


def test_the_warm_pool_serves_every_job_but_data_preparation():
    """Every adapter calls run_job, the one entry; training and analyses (through run_job.py) and
    the study's tail (through their scripts) may go to a warm worker; data preparation is not
    served (it runs while the workers import), so run_job runs it in its own process."""
    from ablation_lab.runtime.dispatch import SERVED_JOBS

    rules = "".join(path.read_text() for path in RULE_FILES)
    shell_jobs = set(re.findall(r'f"\{RUN_JOB\} (\w+) ', rules))
    assert shell_jobs == {"train", "analyse_run"}
    scripts = {path.stem: path.read_text() for path in (ROOT / "workflow" / "scripts").glob("*.py") if path.stem != "_package"}
    script_jobs = {name for name, text in scripts.items() if "run_job(" in text} - {"run_job"}
    assert script_jobs == {"prepare_data", "aggregate", "plot_figures", "plot_analyses", "plot_examples", "report", "tensorboard"}
    assert shell_jobs | script_jobs == {*SERVED_JOBS, "prepare_data"} and "prepare_data" not in SERVED_JOBS
    assert not any("run_in_process" in text for text in scripts.values()), "adapters call run_job, the one entry"
    assert all("import _package" in text for text in scripts.values()), "each script imports the package beside the rules"


def test_no_rule_or_script_builds_an_artifact_path_by_hand():
    """Paths come from ablation_lab.study: no `results/...` literal in rules or scripts."""
    for path in [*RULE_FILES, *(ROOT / "workflow" / "scripts").glob("*.py"), ROOT / "Snakefile"]:
        assert '"results/' not in path.read_text() and 'f"results/' not in path.read_text(), path
