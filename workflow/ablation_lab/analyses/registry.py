"""The registry: every analysis the workflow knows, found in this package.

An analysis is one module of `ablation_lab.analyses` that declares `ANALYSIS = Analysis(...)`
(see `analyses/base.py` and docs/extending.md), named as its module: adding the module is what
registers it. The built-in analyses come first, in the order the report shows them
(evaluation first: the statistics and every other analysis build on it); any other module
follows, by name. Modules without an `ANALYSIS` (helpers such as `compensation`) are skipped.

Importing the registry imports every analysis module, never TensorFlow (each defers it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, RunContext
from ablation_lab.analyses.evaluation import EVALUATION

BUILT_IN = (
    EVALUATION,
    "knockout",
    "calibration",
    "nsdropout",
    "activation_shapes",
    "elasticity",
    "recovery",
    "self_repair",
    "reliance",
    "faults",
)
NOT_ANALYSES = {"base", "registry"}
CHECKED_FIRST = ("reliance",)  # plan-time checks: reliance's refusals came before recovery's, and a bad config's first error stays


def discover() -> dict[str, Analysis]:
    """Name -> analysis, for every module of this package that declares one."""
    found = sorted(module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)]))
    ordered = [*BUILT_IN, *(name for name in found if name not in BUILT_IN and name not in NOT_ANALYSES)]
    analyses = {}
    for name in ordered:
        analysis = getattr(importlib.import_module(f"ablation_lab.analyses.{name}"), "ANALYSIS", None)
        if analysis is None and name in BUILT_IN:
            raise ValueError(f"analyses/{name}.py: a built-in analysis declares no ANALYSIS")
        if analysis is None:
            continue  # a helper module of an analysis (its report half, its statistics)
        if analysis.name != name:
            raise ValueError(f"analyses/{name}.py: its ANALYSIS is named {analysis.name!r}; an analysis is named as its module")
        analyses[name] = analysis
    return analyses


ANALYSES: dict[str, Analysis] = discover()


def asked(config: Mapping[str, Any]) -> list[Analysis]:
    """The analyses whose plan-time checks this study runs, in the order they run: those whose
    `config_key` block is set, `CHECKED_FIRST` first, then registry order.

    Read from the block, not from `params`: some `params` raise checks of their own, which run
    later (when the study counts its jobs); calling them here would change a config's first error.
    """
    ordered = [
        *(ANALYSES[name] for name in CHECKED_FIRST if name in ANALYSES),
        *(a for a in ANALYSES.values() if a.name not in CHECKED_FIRST),
    ]
    return [analysis for analysis in ordered if analysis.config_key and _block(config, analysis.config_key)]


def _block(config: Mapping[str, Any], key: str) -> Any:
    """The config block at a dotted key (`families.nsdropout`), or None."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def run_analysis(name: str, context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The analysis's tidy table, and its per-example arrays (empty for most analyses).

    `params` arrive as the job's request carries them (plain data); the analysis's `run`
    gets them as its `params_type`.
    """
    analysis = ANALYSES[name]
    result = analysis.run(context, analysis.typed(params))
    return result if isinstance(result, tuple) else (result, {})
