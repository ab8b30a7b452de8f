"""Snakemake adapter: the figure of each family and the overview's forest plot."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "plot_figures",
    sm.log[0],
    families=sm.params.families,
    variants=unsealed(sm.params.variants),
    runs=sm.input.runs,
    summary=sm.input.summary,
    comparisons=sm.input.comparisons,
    out=dict(sm.output.items()),
)
