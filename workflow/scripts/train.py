"""Snakemake adapter: train one (variant, seed) with the rule's thread count."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]) as log:
    status = jobs.train(sm.params.spec, int(sm.wildcards.seed), sm.threads, sm.input.data, sm.input.meta, dict(sm.output.items()))
    log.info("training finished: %s", status)
