"""Snakemake adapter: example inputs as each variant of each image-changing family sees them."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "plot_examples",
    sm.log[0],
    families=list(sm.output.keys()),
    variants=unsealed(sm.params.variants),
    data=sm.input.data,
    meta=sm.input.meta,
    seed=sm.params.seed,
    out=dict(sm.output.items()),
)
