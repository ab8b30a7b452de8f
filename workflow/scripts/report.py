"""Snakemake adapter: render the study's self-contained HTML report."""

import contextlib

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
run_job(
    "report",
    sm.log[0],
    study_cfg=unsealed(sm.params.study),
    meta=sm.input.meta,
    tables={key: sm.input[key] for key in sm.params.tables},
    figures=sm.params.figures,
    sharing=sm.params.sharing,
    benchmarks=sm.params.benchmarks,
    out=sm.output.html,
)
