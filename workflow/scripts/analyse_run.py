"""Snakemake adapter: one per-model analysis of one (run, seed), in a warm worker if one is idle."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "analyse_run",
    sm.log[0],
    analysis=sm.wildcards.analysis,
    probe=sm.params.probe,
    spec=sm.params.spec,
    seed=int(sm.wildcards.seed),
    run_dir=sm.params.run_dir,
    data=sm.input.data,
    meta=sm.input.meta,
    out=sm.output.table,
    arrays_out=sm.output.arrays,
    threads=sm.threads,
)
