"""Snakemake adapter: test metrics of one (variant, seed) from its saved probabilities."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "evaluate",
    sm.log[0],
    predictions=sm.input.predictions,
    provenance=sm.input.provenance,
    meta=sm.input.meta,
    run=dict(sm.params.run),
    metrics_out=sm.output.metrics,
    confusion_out=sm.output.confusion,
)
