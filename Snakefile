# Ablation Lab: data prep -> one training job per (run, seed) -> per-model analyses -> report.
# The logic lives in the `ablation_lab` package (workflow/ablation_lab); rules are wiring.
from snakemake.utils import min_version

min_version("9.0")


# The default study, unless --configfile names another: a study file replaces it whole
# (Snakemake would otherwise merge the two, mixing the families of both studies).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
