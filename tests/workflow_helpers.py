"""Running the workflow from tests: in a temporary working directory, never in the checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def write_config(workdir: Path, config: dict, name: str = "study.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, config: Path, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow; `.stdout` holds stdout and stderr merged."""
    command = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    # Snakemake logs to stderr; one merged stream keeps its order and is what tests read.
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake failed ({done.returncode}):\n{done.stdout[-6000:]}")
    return done


def planned_jobs(output: str) -> dict[str, list[dict[str, str]]]:
    """Rule name -> the wildcards of each job that `snakemake --dry-run` plans."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not head:
            continue
        found = re.search(r"wildcards: (.*)", block)
        wildcards = dict(item.split("=", 1) for item in found.group(1).split(", ")) if found else {}
        jobs.setdefault(head.group(1), []).append(wildcards)
    return jobs


def trained(output: str) -> set[tuple[str, int]]:
    """(run, seed) of every training job a dry run plans."""
    return {(w["run"], int(w["seed"])) for w in planned_jobs(output).get("train", [])}


def runs_of(config: dict, *variant_ids: str) -> set[str]:
    """The run names (trained-model folders) of some variants of a study."""
    from ablation_lab.study import Study

    study = Study.from_config(config)
    return {study.run_of(study.variants[v]) for v in variant_ids}
