"""Snakemake adapter: example inputs as each variant of one family sees them."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_here

sm = snakemake
run_here(
    "plot_examples",
    sm.log[0],
    {
        "family": sm.wildcards.family,
        "variants": sm.params.variants,
        "data": sm.input.data,
        "meta": sm.input.meta,
        "seed": sm.params.seed,
        "out": sm.output.figure,
    },
)
