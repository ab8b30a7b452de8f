"""Snakemake adapter: example inputs as each variant of one family sees them."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]):
    jobs.plot_examples(sm.wildcards.family, sm.params.variants, sm.input.data, sm.input.meta, sm.params.seed, sm.output.figure)
