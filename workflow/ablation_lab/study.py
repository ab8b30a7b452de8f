"""A study: the validated config expanded into variants, and the paths of their artifacts.

The Snakefile builds one Study at parse time; it must stay cheap and never import
TensorFlow, so a no-op rerun costs only Snakemake's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ablation_lab import TRAINING_CODE_VERSION
from ablation_lab.ablations import BASELINE, FAMILIES, Variant, baseline_variant, combination_name, combine
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.data import DatasetInfo, describe

RESULTS = "results"


@dataclass
class Study:
    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Study:
        study = cls(validate_config(config))
        _ = study.variants  # expand now, so a bad family block fails before any job runs
        return study

    @property
    def name(self) -> str:
        return self.config["study"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]["name"]

    @property
    def seeds(self) -> list[int]:
        return list(self.config["seeds"])

    @cached_property
    def info(self) -> DatasetInfo:
        """Kind and shape of the data, read cheaply (no data prep); input ablation needs it."""
        return describe(self.config["dataset"])

    @cached_property
    def families(self) -> dict[str, list[Variant]]:
        """Family name -> its variants, in declaration order; the baseline first."""
        declared = self.config["families"]
        info = self.info if "input" in declared else DatasetInfo("unknown", ())
        out: dict[str, list[Variant]] = {BASELINE: [baseline_variant()]}
        for name, params in declared.items():
            try:
                out[name] = FAMILIES[name].expand(params, info)
            except ValueError as error:
                raise ConfigError(f"invalid study config: {error}") from None
        for first, second in self.config["combinations"]:
            out[combination_name(first, second)] = combine(out[first], out[second])
        return out

    @cached_property
    def variants(self) -> dict[str, Variant]:
        by_id: dict[str, Variant] = {}
        for family, variants in self.families.items():
            for variant in variants:
                if variant.id in by_id:
                    raise ConfigError(
                        f"invalid study config: duplicate variant id {variant.id!r} in family {family!r}; each variant must differ"
                    )
                by_id[variant.id] = variant
        return by_id

    def variant(self, family: str, name: str) -> Variant:
        return self.variants[f"{family}/{name}"]

    def spec(self, family: str, name: str) -> dict[str, Any]:
        """Everything that determines a variant's trained model, and nothing else.

        Snakemake reruns a training job when this changes (its `params`), so a variant's
        artifacts stay cached until its own spec, the training settings or the training
        code version change.
        """
        variant = self.variant(family, name)
        return {
            "family": variant.family,
            "variant": variant.name,
            "model": {**self.config["model"], **variant.model},
            "training": dict(self.config["training"]),
            "transforms": [dict(t) for t in variant.transforms],
            "code_version": TRAINING_CODE_VERSION,
        }

    def run_dir(self, variant: Variant, seed: int) -> str:
        return f"{RESULTS}/{self.dataset}/{variant.family}/{variant.name}/seed{seed}"

    def metrics_files(self) -> list[str]:
        return [f"{self.run_dir(v, s)}/metrics.csv" for v in self.variants.values() for s in self.seeds]

    def variant_table(self) -> list[dict[str, Any]]:
        """One row per variant for aggregation and plots (JSON-friendly)."""
        rows = []
        for order, variant in enumerate(self.variants.values()):
            rows.append(
                {
                    "family": variant.family,
                    "variant": variant.name,
                    "label": variant.label,
                    "order": order,
                    "coords": variant.coords,
                    "transforms": [dict(t) for t in variant.transforms],
                }
            )
        return rows
