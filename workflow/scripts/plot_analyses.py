"""Snakemake adapter: the learning curves and the figures of the per-model analyses."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "plot_analyses",
    sm.log[0],
    variants=unsealed(sm.params.variants),
    tables=dict(sm.input.items()),
    out=dict(sm.output.items()),
)
