"""Snakemake adapter: test metrics of one (variant, seed) from its saved probabilities."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]) as log:
    table = jobs.evaluate(sm.input.predictions, sm.input.provenance, sm.input.meta, sm.params.run, sm.output.metrics, sm.output.confusion)
    log.info("metrics:\n%s", table.to_string(index=False))
