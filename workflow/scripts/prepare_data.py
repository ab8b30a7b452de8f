"""Snakemake adapter: load the configured dataset and write its stratified split."""

import _package  # noqa: F401
from ablation_lab.artifacts import unsealed
from ablation_lab.runtime.dispatch import run_here

sm = snakemake
run_here("prepare_data", sm.log[0], {"dataset_cfg": unsealed(sm.params.dataset), "data_out": sm.output.data, "meta_out": sm.output.meta})
