"""Snakemake adapter: load the configured dataset and write its stratified split."""

from ablation_lab.dispatch import run_here

sm = snakemake
# In this job's own process: data prep runs once and needs no warm TensorFlow.
run_here("prepare_data", sm.log[0], {"dataset_cfg": sm.params.dataset, "data_out": sm.output.data, "meta_out": sm.output.meta})
