"""Snakemake adapter: load the configured dataset and write its stratified split."""

from ablation_lab import jobs
from ablation_lab.io import job_log

with job_log(snakemake.log[0]) as log:
    meta = jobs.prepare_data(snakemake.params.dataset, snakemake.output.data, snakemake.output.meta)
    log.info("prepared %s: %s", meta["name"], meta["sizes"])
