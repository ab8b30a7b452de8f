"""Deployed, not forked: `snakedeploy deploy-workflow` into a researcher's own folder, run there.

The workflow is copied from this checkout into a temporary git repository (the "published"
workflow, tagged), deployed with snakedeploy into a second folder (the researcher's project,
with its own config/), and config/test.yaml is run there under a study name of the
researcher's choosing. Every output lands in the project; the workflow's folder stays clean.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT

pytestmark = pytest.mark.workflow

BIN = Path(sys.executable).parent


def publish(source: Path) -> None:
    """This checkout's files (tracked and new, not ignored), as a tagged git repository at `source`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    git = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"], ["tag", "v9.9.9"]):
        subprocess.run([*git, *command], cwd=source, check=True)


def test_a_deployed_workflow_runs_a_study_from_the_users_folder(tmp_path):
    source, project = tmp_path / "ablation-lab", tmp_path / "my-project"
    source.mkdir()
    publish(source)
    subprocess.run([str(BIN / "snakedeploy"), "deploy-workflow", str(source), str(project), "--tag", "v9.9.9"], check=True)
    snakefile = project / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert re.search(r"^module ablation_lab:", text, re.M) and "use rule * from ablation_lab" in text
    # From GitHub, snakedeploy writes github("<owner>/<repo>", path="workflow/Snakefile", tag=...);
    # for a local repository it writes the repository-relative path, which would resolve inside
    # the project: point it at the local repository, as the github() declaration points at the tag.
    snakefile.write_text(text.replace('"workflow/Snakefile"', f'"{source / "workflow" / "Snakefile"}"'))
    config = project / "config" / "test.yaml"
    config.write_text(config.read_text().replace("study: smoke", "study: my-ablation"))

    done = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/test.yaml"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    page = (project / "reports" / "my-ablation" / "report.html").read_text()
    assert "my-ablation" in page and 'id="family-dropout"' in page
    assert list((project / "results").glob("*/*/seed1/model.keras"))
    assert not any((source / name).exists() for name in ("results", "reports/my-ablation", "logs")), "nothing is written into the workflow"
    # A study file with fewer blocks than config/config.yaml (which the user's Snakefile names in
    # `configfile:`) replaces it whole: none of the default study's families or analyses join in.
    minimal = {key: value for key, value in yaml.safe_load(config.read_text()).items() if key in ("seeds", "dataset", "model", "training")}
    minimal |= {"study": "just-dropout", "families": {"dropout": {"rates": [0.5]}}}
    (project / "config" / "just-dropout.yaml").write_text(yaml.safe_dump(minimal))
    run = [str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/just-dropout.yaml"]
    again = subprocess.run(run, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-4000:]
    summary = pd.read_csv(project / "reports" / "just-dropout" / "tables" / "summary.csv")
    assert sorted(summary["family"] + "/" + summary["variant"]) == ["baseline/reference", "dropout/rate-0.5"]
    # the warm workers ran as a module too: the trainings ran in a few processes, not one each
    trained = [log.read_text() for log in (project / "logs").glob("*/*/seed1/train.log")]
    workers = {re.search(r"job train: .*\(process (\d+)", text).group(1) for text in trained}
    assert len(trained) >= 8 and len(workers) <= len(trained) // 2
