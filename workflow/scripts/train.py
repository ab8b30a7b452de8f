"""Snakemake adapter: train one (run, seed) with the rule's threads and GPU request, in a warm worker if one is idle."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_job

sm = snakemake
run_job(
    "train",
    sm.log[0],
    spec=sm.params.spec,
    seed=int(sm.wildcards.seed),
    threads=sm.threads,
    gpu=int(sm.resources.gpu),
    data=sm.input.data,
    meta=sm.input.meta,
    out={kind: sm.output[kind] for kind in ("model", "history", "predictions", "provenance")},
)
