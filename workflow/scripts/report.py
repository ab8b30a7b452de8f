"""Snakemake adapter: render the study's self-contained HTML report."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "report",
    sm.log[0],
    study_cfg=sm.params.study,
    meta=sm.input.meta,
    tables={key: sm.input[key] for key in ("summary", "comparisons", "findings", "runs")},
    figures=sm.params.figures,
    out=sm.output.html,
)
