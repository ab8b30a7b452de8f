"""What an analysis is: the `Analysis` record each analysis module declares, and what it is handed.

An analysis looks at one trained model at a time (`run`, one cached job per model and
probe), then, optionally, at the study as a whole (`summarise`, in the aggregation job), and
draws its figures (`plot`) and report sections (`sections`). The Snakemake rules, `Study`,
the aggregation, the figure job and the report loop over `registry.ANALYSES` and call these
hooks: nothing outside an analysis's module names it.

Importing this module never imports TensorFlow; `RunContext.model` does, on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from ablation_lab.artifacts import read_json

Arrays = dict[tuple[str, str, int], dict[str, np.ndarray]]  # (family, variant, seed) -> per-example arrays


@dataclass
class RunContext:
    """One trained model of a run, the split it was trained on, and the test view to analyse.

    Everything is loaded lazily: an analysis that needs only the saved probabilities never
    pays for TensorFlow or the model file.
    """

    run_dir: Path
    split_file: str
    meta_file: str
    spec: dict[str, Any]
    seed: int
    view: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def provenance(self) -> dict[str, Any]:
        return read_json(self.run_dir / "provenance.json")

    def checked(self, kind: str, name: str) -> Path:
        """A file of the run, after checking it against the digest its training job recorded."""
        from ablation_lab.artifacts import check_digest

        path = self.run_dir / name
        check_digest(path, self.provenance.get("digests", {}).get(kind), "train")
        return path

    @cached_property
    def model_spec(self) -> Any:
        """The run's model spec, typed (`specs.ModelSpec`): what an absent key means comes from the schema."""
        from ablation_lab.specs import ModelSpec

        return ModelSpec.of(self.spec["model"])

    @cached_property
    def saved(self) -> dict[str, np.ndarray]:
        """The probabilities the training job saved (validation and test, training view)."""
        with np.load(self.checked("predictions", "predictions.npz")) as archive:
            return {key: archive[key] for key in archive.files}

    @cached_property
    def split(self) -> Any:
        from ablation_lab.data.split import load_split

        return load_split(self.split_file, self.meta_file)

    @cached_property
    def model(self) -> Any:
        from ablation_lab.models.build import load_model

        return load_model(str(self.checked("model", "model.keras")))

    @cached_property
    def fill_statistics(self) -> dict[str, Any]:
        """Training-split statistics the transforms fill and clip with (computed once, not per split)."""
        from ablation_lab.ablations import fill_statistics

        return fill_statistics(self.split.x("train"))

    @property
    def class_names(self) -> list[str]:
        return list(self.split.meta["class_names"])

    def labels(self, split: str = "test") -> np.ndarray:
        return self.saved[f"y_{split}"]

    def inputs(self, split: str = "test") -> np.ndarray:
        """A split as the model sees it: its training transforms, then (test only) the view's."""
        from ablation_lab.ablations import transform_split

        transforms = self.spec["transforms"] + (self.view if split == "test" else [])
        return transform_split(self.split.x(split), split, transforms, self.seed, self.fill_statistics)

    def probabilities(self, split: str = "test") -> np.ndarray:
        """Class probabilities on a split: saved ones when the view adds nothing, else predicted."""
        if split != "test" or not self.view:
            return self.saved[f"probabilities_{split}"]
        from ablation_lab.training.train import predict_proba

        return predict_proba(self.model, self.inputs(split))


@dataclass
class StudyTables:
    """What an analysis's study-level `summarise` sees, in the aggregation job."""

    table: pd.DataFrame | None  # its own per-model tables, joined (None when no model gave one)
    arrays: Arrays  # the per-example arrays its runs saved beside their tables
    runs: pd.DataFrame  # evaluation: one row per (variant, seed)
    hits: dict[tuple[str, str, int], np.ndarray]  # which test examples each model got right
    variants: list[dict[str, Any]]
    params: Any  # its parameters: its `Analysis.params_type` by the time `summarise` reads them


@dataclass(frozen=True)
class Params:
    """The base of an analysis's typed parameters: a frozen dataclass with the fields its `params(config)` gives.

    They travel as a plain mapping (in a job's `params`, under the digest that names each
    probe) and become this class at one boundary (`registry.run_analysis`, the `summarise`
    an `Analysis` hands a `StudyTables`, and `Analysis.study_params` for the report's
    sections), so the analysis's code reads attributes: a misspelt one is an error at the
    first test, not a silent `.get` fallback. A key the mapping leaves out comes from the
    schema's `config_key` block, the one place a default is written.
    """

    config_key: ClassVar[str | None] = None  # the config block holding them (dotted: "families.nsdropout")

    @classmethod
    def of(cls, params: Params | Mapping[str, Any]) -> Self:
        """A mapping of its parameters, a key it leaves out taken from the schema; typed ones are returned as they are."""
        if isinstance(params, cls):
            return params
        from ablation_lab.specs import _with_defaults

        return cls(**_with_defaults(cls, cls.config_key, params))

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain data (nested parameters too); not the probe's identity, which `params(config)` gives."""
        return asdict(self)


def always(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of an analysis every study runs and that takes none."""
    return {}


def every_family(config: Mapping[str, Any], family: str) -> bool:
    return True


def listed_families(block: str) -> Callable[[Mapping[str, Any], str], bool]:
    """The `wants` of an analysis whose block lists the families whose models it looks at (`<block>.families`)."""

    def wants(config: Mapping[str, Any], family: str) -> bool:
        return family in config[block]["families"]

    return wants


def no_figures(study: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Analysis:
    """A registered analysis: one module's declaration of what it computes and shows.

    `params(config)` reads the study config (its `config_key` block, if it has one): the
    analysis's parameters as plain data (part of each probe's identity), or None when the
    study does not ask for it. `params_type` (a `Params` subclass) is what `run`,
    `summarise` and its sections (through `study_params`) receive them as; its `config_key`
    is the analysis's. `uses_test_view`: the analysis runs once per variant test view
    (evaluation does); otherwise once per trained model. `code`: the package modules whose edits rerun
    its jobs (its own module and `analyses.base` always count).

    Study level, all optional: `summaries` names the tables `summarise` returns (written
    beside its joined table); `figures(study)` names the figures `plot(tables, variants,
    out)` draws (file `<name>.png`, with `_` as `-`; `tables` maps table names to CSV
    paths); `sections` build its report sections from the report's inputs.

    Plan time, all optional, each called only when the study sets its `config_key` block
    (design.py runs them while it expands the study, so a bad block is one ConfigError line
    before any job): `chain_only(config)` names the keys it was asked for that cut the model
    as a chain (a model that branches is refused naming the first, `checks.refuse_chain_only`);
    `branching(config, why)` refuses anything else it cannot do on a branching model (`why`
    says where it branches); `check(config)` checks its block against the model (the layers
    it names), raising a ConfigError naming the key. `check_sizes(config, sizes)` checks it
    against the split's train/val/test counts, once the Snakefile or `check` has read them
    (design.check_split_sizes): a number of examples asked past a split's size.
    """

    name: str
    title: str
    description: str
    run: Callable[[RunContext, Any], pd.DataFrame | tuple[pd.DataFrame, dict[str, np.ndarray]]]
    params: Callable[[Mapping[str, Any]], dict[str, Any] | None] = always
    params_type: type[Params] | None = None  # None: `run` gets the plain mapping (an analysis without parameters)
    uses_test_view: bool = False
    config_key: str | None = None  # the config block holding its parameters, if any: its `params_type`'s
    code: tuple[str, ...] = ("ablations",)
    wants: Callable[[Mapping[str, Any], str], bool] = every_family  # which families' models it looks at
    summaries: tuple[str, ...] = ()
    summarise: Callable[[StudyTables], dict[str, pd.DataFrame]] | None = None
    figures: Callable[[Any], list[str]] = no_figures
    plot: Callable[[Mapping[str, str], Sequence[dict[str, Any]], Mapping[str, str]], None] | None = None
    sections: tuple[Callable[[Any], list[Any]], ...] = field(default=())
    chain_only: Callable[[Mapping[str, Any]], list[str]] | None = None
    branching: Callable[[Mapping[str, Any], str], None] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None
    check_sizes: Callable[[Mapping[str, Any], Mapping[str, int]], None] | None = None

    def __post_init__(self) -> None:
        """Its `config_key` from its `params_type`; its `summarise` handed the typed parameters.

        The aggregation builds a `StudyTables` with the parameters as they travel (a mapping);
        wrapping `summarise` here types them once for every analysis, at the record itself.
        """
        if self.params_type is None:
            return
        if self.config_key not in (None, self.params_type.config_key):
            raise ValueError(f"analysis {self.name}: config_key {self.config_key!r} is not its params_type's")
        object.__setattr__(self, "config_key", self.params_type.config_key)
        if self.summarise is not None:
            object.__setattr__(self, "summarise", typed_summary(self.summarise, self.params_type))

    def typed(self, params: Mapping[str, Any]) -> Any:
        """Its parameters as its `params_type` (as given, for an analysis without one)."""
        return params if self.params_type is None else self.params_type.of(params)

    def study_params(self, config: Mapping[str, Any]) -> Any:
        """Its typed parameters in a study config, or None when the study does not ask for it (what its sections read)."""
        params = self.params(config)
        return None if params is None else self.typed(params)

    @property
    def modules(self) -> tuple[str, ...]:
        """Its code, for the job's `code` param: an edit to any of these reruns its jobs."""
        return (f"analyses.{self.name}", "analyses.base", *self.code)


def typed_summary(
    summarise: Callable[[StudyTables], dict[str, pd.DataFrame]], params_type: type[Params]
) -> Callable[[StudyTables], dict[str, pd.DataFrame]]:
    """`summarise`, handed the study's tables with their parameters as `params_type`."""

    def summarise_typed(study: StudyTables) -> dict[str, pd.DataFrame]:
        return summarise(replace(study, params=params_type.of(study.params)))

    return summarise_typed
