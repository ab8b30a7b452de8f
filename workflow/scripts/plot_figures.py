"""Snakemake adapter: every figure drawn from the study's tables, in one process."""

import _package  # noqa: F401
from ablation_lab.dispatch import run_here
from ablation_lab.io import unsealed

sm = snakemake
posthoc = {name: path for name, path in sm.input.items() if name not in ("runs", "summary")}
run_here(
    "plot_figures",
    sm.log[0],
    {
        "families": sm.params.families,
        "variants": unsealed(sm.params.variants),
        "runs": sm.input.runs,
        "summary": sm.input.summary,
        "posthoc": posthoc,
        "out": dict(sm.output.items()),
        "comparisons": sm.input.comparisons,
    },
)
