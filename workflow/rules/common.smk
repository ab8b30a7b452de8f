# Config validation, the study's variants and every input function. Nothing here imports
# TensorFlow: parsing the workflow stays cheap, so a no-op rerun is fast.
import os
import sys

from snakemake.utils import validate

# Parse time finds the package beside the rules even before `pip install -e .`; the jobs
# import the installed package (make install, or `pip install --no-deps -e .` in conda).
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from ablation_lab import source_digest
from ablation_lab.ablations import BASELINE
from ablation_lab.study import Study

# Our validator first: it names the bad key in one line (snakemake's own dump is long).
STUDY = Study.from_config(config)
validate(config, schema="../schemas/config.schema.yaml")

DATASET = STUDY.dataset
NAME = STUDY.name
RUN = "results/{dataset}/{family}/{variant}/seed{seed}"
TABLES = f"reports/{NAME}/tables"
FIGURES = f"reports/{NAME}/figures"


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    family=r"[a-z0-9_]+(-x-[a-z0-9_]+)?",
    variant=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    study=r"[a-z0-9][a-z0-9_-]*",


def dataset_config(wildcards):
    return STUDY.config["dataset"]


def variant_spec(wildcards):
    """The resolved spec: a training job reruns when (and only when) this changes."""
    return STUDY.spec(wildcards.family, wildcards.variant)


def run_label(wildcards):
    return {
        "family": wildcards.family,
        "variant": wildcards.variant,
        "seed": int(wildcards.seed),
    }


def family_title(wildcards):
    from ablation_lab.report import family_title as title

    return title(wildcards.family)[0]


def example_families():
    """Families whose variants change the images: the report shows what the model saw."""
    if STUDY.info.kind != "image":
        return []
    return [
        family
        for family, variants in STUDY.families.items()
        if any(t["op"] in ("mask", "noise") for v in variants for t in v.transforms)
        and "-x-" not in family
    ]


def figures_by_family():
    figures = {
        family: [f"{FIGURES}/{family}.png"]
        for family in STUDY.families
        if family != BASELINE
    }
    for family in example_families():
        figures[family].append(f"{FIGURES}/{family}-examples.png")
    return figures


def all_figures(wildcards):
    return [path for paths in figures_by_family().values() for path in paths]


def final_outputs():
    return [f"reports/{NAME}/report.html"]


def all_metrics(wildcards):
    return STUDY.metrics_files()


onstart:
    # Warm workers amortise Python + TensorFlow start-up over the jobs of a local run
    # (ablation_lab/dispatch.py); cluster jobs run in their own processes.
    if workflow.local_exec:
        from ablation_lab.worker import start_pool

        start_pool(workflow.cores)


onsuccess:
    from ablation_lab.worker import stop_pool

    stop_pool()


onerror:
    from ablation_lab.worker import stop_pool

    stop_pool()
