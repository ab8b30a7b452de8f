"""Snakemake adapter: the knockout curves and the compensation overlays of the study."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_here

sm = snakemake
run_here(
    "plot_posthoc",
    sm.log[0],
    {"knockout": sm.input.knockout, "compensation": sm.input.compensation, "variants": sm.params.variants, "out": dict(sm.output.items())},
)
