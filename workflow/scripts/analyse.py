"""Snakemake adapter: aggregate every run's metrics into the study's tables."""

from ablation_lab.dispatch import run_job

sm = snakemake
run_job("analyse", sm.log[0], metrics_files=list(sm.input.metrics), variants=sm.params.variants, out=dict(sm.output.items()))
