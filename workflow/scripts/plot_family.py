"""Snakemake adapter: the accuracy figure of one family."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "plot_family",
    sm.log[0],
    family=sm.wildcards.family,
    title=sm.params.title,
    variants=sm.params.variants,
    runs=sm.input.runs,
    summary=sm.input.summary,
    out=sm.output.figure,
)
