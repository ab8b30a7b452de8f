"""Snakemake adapter: the accuracy figure of one family."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]):
    jobs.plot_family(sm.wildcards.family, sm.params.title, sm.params.variants, sm.input.runs, sm.input.summary, sm.output.figure)
