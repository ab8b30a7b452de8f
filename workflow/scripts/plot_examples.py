"""Snakemake adapter: example inputs as each variant of one family sees them."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "plot_examples",
    sm.log[0],
    family=sm.wildcards.family,
    variants=sm.params.variants,
    data=sm.input.data,
    meta=sm.input.meta,
    seed=sm.params.seed,
    out=sm.output.figure,
)
