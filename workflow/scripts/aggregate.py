"""Snakemake adapter: join every variant's per-model tables into the study's tables."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "aggregate",
    sm.log[0],
    probes=sm.params.probes,
    histories=sm.params.histories,
    variants=unsealed(sm.params.variants),
    params=sm.params.analyses,
    margin=sm.params.margin,
    extra=sm.params.extra,
    out=dict(sm.output.items()),
)
