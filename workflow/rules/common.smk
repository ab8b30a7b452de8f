# Config validation, the study's variants and every input function. Nothing here imports
# TensorFlow: parsing the workflow stays cheap, so a no-op rerun is fast. Every path comes
# from ablation_lab.study, the single owner of artifact names.
import json
import os
import sys

# This workflow's own folder (workflow/), found from this file rather than from the main
# Snakefile: used as a module (snakedeploy), the main Snakefile is the user's. Parse time finds
# the package beside the rules even before `pip install -e .`; the scripts do the same, so a
# rule's conda environment needs only the dependencies. A module read from a git repository
# or GitHub has no folder on disk: the package is then the installed one (docs/your-project.md).
WORKFLOW_DIR = os.path.dirname(os.path.abspath(str(workflow.current_basedir)))
if os.path.isdir(os.path.join(WORKFLOW_DIR, "ablation_lab")):
    sys.path.insert(0, WORKFLOW_DIR)

from ablation_lab import source_digest, study as paths
from ablation_lab.ablations import BASELINE
from ablation_lab.analyses.registry import ANALYSES
from ablation_lab.checks import check_writable
from ablation_lab.design import check_split_sizes
from ablation_lab.config import ConfigError, load_study_yaml, merge_studies
from ablation_lab.data.base import DataError
from ablation_lab.data.split import inspect as inspect_data
from ablation_lab.artifacts import read_json, sealed
from ablation_lab.runtime import hooks as runtime
from ablation_lab.study import Study

# Snakemake's YAML reader keeps the last of two duplicate keys; read the study files again
# strictly, so a duplicate key or a syntax error is one line naming the file and line.
# One validation, against workflow/schemas/config.schema.yaml, with one-line errors that
# name the key (snakemake.utils.validate would print the schema); defaults are filled in.
# A bad study or data file ends the run with that line alone (no Python frames), exit 1:
# Snakemake prints the message of a SystemExit raised while parsing and nothing else. The
# data is checked as data prep would check it until the split is prepared (then never again).
# Used as a module of a user's Snakefile (snakedeploy writes `configfile: "config/config.yaml"`
# there), `config` is the default study deep-merged with the --configfile study: the default's
# families and blocks would join the user's. A study file replaces the default whole, as the
# repository's own Snakefile arranges: the study is then read from the --configfile files alone.
try:
    studies = [
        load_study_yaml(f)
        for f in workflow.overwrite_configfiles or ["config/config.yaml"]
    ]
    as_module = not workflow.modifier.is_main_snakefile()
    STUDY = Study.from_config(
        merge_studies(studies)
        if as_module and workflow.overwrite_configfiles
        else config
    )
    # the data file's header, read here: a bad one is the line below, not a traceback later
    _ = STUDY.info
    if os.path.exists(STUDY.split_file()) and os.path.exists(STUDY.meta_file()):
        sizes = read_json(STUDY.meta_file())["sizes"]
    else:
        # what prepare_data would refuse, refused now
        sizes = inspect_data(STUDY.config["dataset"])["sizes"]
    # what a job would refuse for the split's size (an analysis's check_sizes), refused now
    check_split_sizes(STUDY.config, sizes)
    # a read-only output folder: this line, before any job writes
    check_writable([paths.RESULTS, paths.REPORTS, paths.LOGS])
except (ConfigError, DataError, OSError) as error:
    sys.exit(f"error: {error}")
NAME = STUDY.name


wildcard_constraints:
    **paths.WILDCARDS,


def train_request(wildcards, input, output):
    """A training job's arguments for workflow/scripts/run_job.py: what determines the
    model and where it goes. Its threads and GPU come on the command line, so changing
    them retrains nothing."""
    return runtime.request_argument(
        json.dumps(
            {
                "spec": run_spec(wildcards),
                "seed": int(wildcards.seed),
                "data": input.data,
                "meta": input.meta,
                "out": {kind: output[kind] for kind in paths.RUN_FILES},
            },
            sort_keys=True,
        )
    )


def analysis_request(wildcards, input, output):
    """An analysis job's arguments for workflow/scripts/run_job.py."""
    return runtime.request_argument(
        json.dumps(
            {
                "analysis": wildcards.analysis,
                "probe": probe_spec(wildcards),
                "spec": run_spec(wildcards),
                "seed": int(wildcards.seed),
                "run_dir": run_dir(wildcards),
                "data": input.data,
                "meta": input.meta,
                "out": output.table,
                "arrays_out": output.arrays,
            },
            sort_keys=True,
        )
    )


def dataset_config(wildcards):
    return sealed(STUDY.config["dataset"])


def run_spec(wildcards):
    """The resolved spec: a training job reruns when (and only when) this changes."""
    return STUDY.runs[wildcards.run]


def probe_spec(wildcards):
    return STUDY.probe_spec(wildcards.analysis, wildcards.probe)


def analysis_code(wildcards):
    """A digest of the code an analysis runs: editing it reruns that analysis, and only it."""
    return source_digest(*ANALYSES[wildcards.analysis].modules)


def run_dir(wildcards):
    return paths.RUN_DIR.format(**wildcards)


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


def family_figures():
    """Family -> its figure (every family but the baseline)."""
    return {
        family: f"{STUDY.figures_dir()}/{family}.png"
        for family in STUDY.families
        if family != BASELINE
    }


def example_figures():
    return {
        family: f"{STUDY.figures_dir()}/{family}-examples.png"
        for family in example_families()
    }


def family_titles():
    from ablation_lab.report.page import family_title

    return {family: {"title": family_title(family)[0]} for family in family_figures()}


def report_figures():
    """Figure name -> its files: each family's figure (and example inputs), the learning
    curves and each analysis's figures, and the overview's forest plot."""
    examples = example_figures()
    figures = {
        family: [path, *([examples[family]] if family in examples else [])]
        for family, path in family_figures().items()
    }
    figures |= {name: [path] for name, path in STUDY.extra_figures().items()}
    figures["overview"] = [STUDY.forest_figure()]
    return figures


def all_figures(wildcards):
    return [path for paths in report_figures().values() for path in paths]


def upstream_benchmarks():
    """Rule and benchmark file of every job before the report (the provenance runtimes)."""
    study_jobs = ["aggregate", "plot_figures", "plot_analyses"]
    study_jobs += ["plot_examples"] if example_figures() else []
    return STUDY.benchmark_table(study_jobs)


def all_benchmarks(wildcards):
    return sorted({row["path"] for row in upstream_benchmarks()})


def all_histories(wildcards):
    return STUDY.history_files()


def all_probes(wildcards):
    return STUDY.probe_files()


def final_outputs():
    """The report, and every run's and analysis's files: a deleted one is rebuilt by a rerun."""
    tensorboard = [STUDY.tensorboard_dir()] if STUDY.config["tensorboard"] else []
    return [STUDY.report_file(), *STUDY.artifact_files(), *tensorboard]


def mem_mb_by_attempt(first_mb: int):
    """A memory request that grows with each attempt: a job killed for memory (on a cluster,
    OUT_OF_MEMORY) is retried (--retries) with first_mb x attempt."""

    def mem_mb(wildcards, attempt: int) -> int:
        return first_mb * attempt

    return mem_mb


def training_gpus(wildcards) -> int:
    """GPUs a training job requests: config `resources: gpu` (0 or 1). Snakemake schedules it
    locally (`--resources gpu=1`); the SLURM executor turns it into `--gpus`."""
    return STUDY.config["resources"]["gpu"]


# The command of the jobs a warm worker may serve (ablation_lab/runtime/hooks.py).
RUN_JOB = runtime.job_command(
    workflow, os.path.join(WORKFLOW_DIR, "scripts", "run_job.py")
)


# Start and stop the warm workers and the watchdog with the run (main Snakefile or module).
runtime.install(workflow)
