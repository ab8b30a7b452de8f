"""Snakemake adapter: the study's runs as TensorBoard logs (config `tensorboard: true`)."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "tensorboard",
    sm.log[0],
    history=sm.input.history,
    runs=sm.input.runs,
    variants=unsealed(sm.params.variants),
    out=sm.output.logs,
)
