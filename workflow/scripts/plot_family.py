"""Snakemake adapter: the accuracy figure of one family."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_here

sm = snakemake
run_here(
    "plot_family",
    sm.log[0],
    {
        "family": sm.wildcards.family,
        "title": sm.params.title,
        "variants": sm.params.variants,
        "runs": sm.input.runs,
        "summary": sm.input.summary,
        "out": sm.output.figure,
    },
)
