"""Snakemake adapter: load the configured dataset and write its stratified split.

Unusable data ends the job with its one DataError line on stderr (Snakemake shows it), not a
traceback; the job's log holds the traceback for anyone who wants it.
"""

import contextlib
import sys

# A module read from git or GitHub has no package beside its scripts: the installed one serves.
with contextlib.suppress(ModuleNotFoundError):
    import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.data.base import DataError
from ablation_lab.runtime.dispatch import run_job

sm = snakemake
try:
    # Through run_job like every adapter, though no worker serves it (not in SERVED_JOBS: it runs
    # while the workers still import TensorFlow), so run_job runs it in this process: one entry
    # for every rule, and whether a job is served is decided in one place, dispatch.py.
    run_job("prepare_data", sm.log[0], dataset_cfg=unsealed(sm.params.dataset), data_out=sm.output.data, meta_out=sm.output.meta)
except DataError as error:
    sys.exit(f"error: {error}")
