"""Snakemake adapter: train one (variant, seed) with the rule's thread count."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "train",
    sm.log[0],
    spec=sm.params.spec,
    seed=int(sm.wildcards.seed),
    threads=sm.threads,
    data=sm.input.data,
    meta=sm.input.meta,
    out=dict(sm.output.items()),
)
