"""Snakemake adapter: aggregate every run's metrics into the study's tables."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]):
    jobs.analyse(list(sm.input.metrics), sm.params.variants, dict(sm.output.items()))
