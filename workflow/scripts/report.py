"""Snakemake adapter: render the study's self-contained HTML report."""

from ablation_lab import jobs
from ablation_lab.io import job_log

sm = snakemake
with job_log(sm.log[0]) as log:
    tables = {key: sm.input[key] for key in ("summary", "comparisons", "findings", "runs")}
    path = jobs.report(sm.params.study, sm.input.meta, tables, sm.params.figures, sm.output.html)
    log.info("report written to %s", path)
