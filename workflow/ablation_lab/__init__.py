"""Ablation Lab: ablation studies of Keras models, orchestrated by Snakemake.

Importing the package (or any module but `models`, `train` and `evaluate_model`) never
imports TensorFlow: the Snakefile, aggregation, plots and the report stay fast.
"""

__version__ = "0.1.0"

# Bump when a change to the training code changes what a trained model is: every training
# job's `params` carry it, so Snakemake retrains everything once. Snakemake does not see
# edits inside imported modules by itself.
TRAINING_CODE_VERSION = 2
