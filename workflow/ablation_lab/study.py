"""A study: the validated config, its variants, the names of its runs and probes, and every path.

Which variants a config asks for is the study's design (`design.py`); a Study keeps them and
names what they need. The Snakefile builds one Study at parse time; rules, scripts, the CLI
and the tests ask it for paths and names, nothing rebuilds one by hand. It must stay cheap and never import
TensorFlow, so a no-op rerun costs only Snakemake's own bookkeeping.

Artifacts are keyed by what determines them, not by the study that asked for them:

    results/<data>/split.npz, meta.json               one prepared split per data key
    results/<data>/<run>/seed<k>/model.keras ...       one trained model per run key and seed
    results/<data>/<run>/seed<k>/<analysis>/<probe>.csv  one per-model analysis table
    reports/<study>/...                               what this study makes of them

`<data>` digests the dataset settings and the data file's content; `<run>` digests the
resolved model, training settings, training-time transforms and the training code version.
Variants and studies that resolve to the same run share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ablation_lab import TRAINING_CODE_VERSION, checks, design, identity
from ablation_lab.ablations import POSTHOC_SUFFIX, UNITS, Variant
from ablation_lab.analyses.registry import ANALYSES, EVALUATION
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.data.base import FORMAT_VERSION, DatasetInfo
from ablation_lab.data.datasets import describe, identity_of

RESULTS = "results"
REPORTS = "reports"
LOGS = "logs"
BENCHMARKS = f"{RESULTS}/benchmarks"

# Snakemake patterns: the rules take their inputs and outputs from here.
DATA_DIR = RESULTS + "/{data}"
RUN_DIR = DATA_DIR + "/{run}/seed{seed}"
PROBE_FILE = RUN_DIR + "/{analysis}/{probe}.csv"
RUN_FILES = {"model": "model.keras", "history": "history.csv", "predictions": "predictions.npz", "provenance": "provenance.json"}
WILDCARDS = {
    "data": rf"[a-z0-9_]+-[0-9a-f]{{{identity.DATA_DIGEST}}}",
    "run": rf"[a-z0-9_.+-]+-[0-9a-f]{{{identity.RUN_DIGEST}}}",
    "probe": rf"[a-z0-9_.+-]+-[0-9a-f]{{{identity.PROBE_DIGEST}}}",
    "analysis": r"[a-z_]+",
    "seed": r"\d+",
    "family": r"[a-z0-9_]+(-x-[a-z0-9_]+)?",
}


def split_file(data: str = "{data}") -> str:
    return f"{DATA_DIR.format(data=data)}/split.npz"


def meta_file(data: str = "{data}") -> str:
    return f"{DATA_DIR.format(data=data)}/meta.json"


def run_file(kind: str, data: str = "{data}", run: str = "{run}", seed: int | str = "{seed}") -> str:
    return f"{RUN_DIR.format(data=data, run=run, seed=seed)}/{RUN_FILES[kind]}"


def probe_file(
    data: str = "{data}", run: str = "{run}", seed: int | str = "{seed}", analysis: str = "{analysis}", probe: str = "{probe}"
) -> str:
    return PROBE_FILE.format(data=data, run=run, seed=seed, analysis=analysis, probe=probe)


def probe_arrays(**wildcards: Any) -> str:
    """The per-example arrays beside a probe's table (e.g. each test example's predicted class)."""
    return probe_file(**wildcards).removesuffix(".csv") + ".npz"


def job_log(kind: str, data: str = "{data}", run: str = "{run}", seed: int | str = "{seed}") -> str:
    return f"{LOGS}/{data}/{run}/seed{seed}/{kind}.log"


def job_benchmark(kind: str, data: str = "{data}", run: str = "{run}", seed: int | str = "{seed}") -> str:
    return f"{BENCHMARKS}/{data}/{run}/seed{seed}/{kind}.tsv"


def data_benchmark(data: str = "{data}") -> str:
    """The data preparation job's benchmark (one per data key, shared by the studies on it)."""
    return f"{BENCHMARKS}/{data}/prepare_data.tsv"


@dataclass(frozen=True)
class Probe:
    """One per-model analysis of one variant's trained model, under the variant's test view."""

    analysis: str
    name: str
    spec: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class Study:
    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Study:
        validated = validate_config(config)
        checks.resolve_compensation(validated)
        study = cls(validated)
        _ = study.variants  # expand now, so a bad family block fails before any job runs
        checks.check_job_count(study.config, len(study.runs) * len(study.seeds) + study.analysis_job_count())
        return study

    # --- what the study declares --------------------------------------------------------

    @property
    def compensation_off(self) -> str | None:
        """Why the study has post-hoc knockout but no compensation gap, when the default left it out."""
        posthoc = self.config.get("posthoc")
        if not posthoc or posthoc["compensation"]:
            return None
        reason = checks.compensation_off_reason(self.config)
        return reason[0] if reason else None

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
        """Family name -> its variants, in declaration order; the baseline first (`design.expand_families`)."""
        return design.expand_families(self.config, lambda: self.info)

    @cached_property
    def variants(self) -> dict[str, Variant]:
        """Variant id -> variant, every family's in order."""
        return design.variants_by_id(self.families)

    # --- identity -------------------------------------------------------------------------

    @cached_property
    def data_spec(self) -> dict[str, Any]:
        """What determines the prepared split: the dataset block, the data file's content, the format."""
        dataset = self.config["dataset"]
        return {"dataset": identity_of(dataset), "content": identity.content_digest(dataset.get("path")), "format": FORMAT_VERSION}

    @cached_property
    def data_key(self) -> str:
        return identity.data_name(self.dataset, self.data_spec)

    def run_spec(self, variant: Variant) -> dict[str, Any]:
        """Everything that determines a variant's trained model, and nothing else.

        Test-only transforms and no-op transforms are left out: they do not change the model.
        Snakemake reruns a training job only when its spec (its `params`) changes, and a
        changed spec is a new folder, so no other study's run is ever invalidated.
        """
        training_transforms, _ = identity.split_transforms(variant.transforms)
        try:
            model = identity.canonical_model({**self.config["model"], **variant.model})
        except ValueError as error:
            raise ConfigError(f"invalid study config: {error} (variant {variant.id})") from None
        if model.get("weights") == "as_saved" and training_transforms:
            model["weights"] = "retrain"  # trained on changed inputs: the saved weights were not
        saved = model.get("weights") == "as_saved"  # nothing is trained: the training settings do not touch it
        return identity.canonical(
            {
                "model": model,
                "training": {} if saved else identity.canonical_training(self.config["training"]),
                "transforms": training_transforms,
                "code_version": TRAINING_CODE_VERSION,
            }
        )

    def test_view(self, variant: Variant) -> list[dict[str, Any]]:
        """The transforms a variant applies to the test inputs only, at evaluation time."""
        return identity.split_transforms(variant.transforms)[1]

    @cached_property
    def _run_names(self) -> dict[str, str]:
        return {v.id: identity.run_name(self.run_spec(v)) for v in self.variants.values()}

    def run_of(self, variant: Variant) -> str:
        return self._run_names[variant.id]

    @cached_property
    def runs(self) -> dict[str, dict[str, Any]]:
        """Run name -> spec, one entry per distinct trained model of the study."""
        return {self.run_of(v): self.run_spec(v) for v in self.variants.values()}

    def sharing(self) -> dict[str, list[str]]:
        """Run name -> the variant ids that share its trained model (only runs shared by 2+)."""
        users: dict[str, list[str]] = {}
        for variant in self.variants.values():
            users.setdefault(self.run_of(variant), []).append(variant.id)
        return {run: ids for run, ids in users.items() if len(ids) > 1}

    def probe(self, variant: Variant, analysis: str = EVALUATION) -> Probe:
        view = self.test_view(variant) if ANALYSES[analysis].uses_test_view else []
        spec = identity.canonical({"analysis": analysis, "params": ANALYSES[analysis].params(self.config), "view": view})
        return Probe(analysis, identity.probe_name(view, spec), spec)

    def analysed(self, analysis: str) -> list[Variant]:
        """The variants whose trained models an analysis looks at."""
        return [v for v in self.variants.values() if ANALYSES[analysis].wants(self.config, v.family)]

    @cached_property
    def _probe_specs(self) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for analysis in self.analyses():
            for variant in self.analysed(analysis):
                probe = self.probe(variant, analysis)
                found[analysis, probe.name] = probe.spec
        return found

    def probe_names(self, analysis: str) -> list[str]:
        """The probes (cached analysis jobs per trained model) an analysis has in this study."""
        return sorted({name for (probed, name) in self._probe_specs if probed == analysis})

    def probe_spec(self, analysis: str, name: str) -> dict[str, Any]:
        """The spec behind a probe's file name (the `params` of its job)."""
        return self._probe_specs[analysis, name]

    def analysis_job_count(self) -> int:
        """Per-model analysis jobs: one per (analysis, probe, trained model, seed)."""
        jobs = {(name, self.probe(v, name).name, self.run_of(v)) for name in self.analyses() for v in self.analysed(name)}
        return len(jobs) * len(self.seeds)

    def analyses(self) -> list[str]:
        """The per-model analyses this study asks for, in registry order (evaluation first)."""
        return [name for name, analysis in ANALYSES.items() if analysis.params(self.config) is not None]

    # --- paths ------------------------------------------------------------------------------

    def split_file(self) -> str:
        return split_file(self.data_key)

    def meta_file(self) -> str:
        return meta_file(self.data_key)

    def run_dir(self, variant: Variant, seed: int) -> str:
        return RUN_DIR.format(data=self.data_key, run=self.run_of(variant), seed=seed)

    def probe_file(self, variant: Variant, seed: int, analysis: str = EVALUATION, arrays: bool = False) -> str:
        """A probe's table, or (`arrays`) the per-example arrays saved beside it."""
        where = {
            "data": self.data_key,
            "run": self.run_of(variant),
            "seed": seed,
            "analysis": analysis,
            "probe": self.probe(variant, analysis).name,
        }
        return probe_arrays(**where) if arrays else probe_file(**where)

    def report_dir(self) -> str:
        return f"{REPORTS}/{self.name}"

    def report_file(self) -> str:
        return f"{self.report_dir()}/report.html"

    def tensorboard_dir(self) -> str:
        return f"{self.report_dir()}/tensorboard"

    def tables_dir(self) -> str:
        return f"{self.report_dir()}/tables"

    def figures_dir(self) -> str:
        return f"{self.report_dir()}/figures"

    def study_log(self, kind: str) -> str:
        return f"{LOGS}/{self.name}/{kind}.log"

    def study_benchmark(self, kind: str) -> str:
        return f"{BENCHMARKS}/{self.name}/{kind}.tsv"

    def extra_tables(self) -> dict[str, str]:
        """The study tables beyond evaluation: each other analysis's joined table and its
        study-level summaries (aggregation writes them, the figures and the report read them)."""
        names = [name for name in self.analyses() if name != EVALUATION]
        names += [summary for name in names for summary in ANALYSES[name].summaries]
        return {name: f"{self.tables_dir()}/{name}.csv" for name in names}

    def analysis_params(self) -> dict[str, dict[str, Any]]:
        """Each analysis of the study -> its parameters (what its study-level summary reads)."""
        return {name: ANALYSES[name].params(self.config) for name in self.analyses()}

    def compensation_comparisons(self) -> list[str]:
        families = self.families
        found = [UNITS] if UNITS in families else []
        return found + [family for family in ("input", "noise") if family + POSTHOC_SUFFIX in families]

    def extra_figures(self) -> dict[str, str]:
        """Figure name -> path: the learning curves, then the figures each analysis draws."""
        names = ["learning_curves", *(figure for name in self.analyses() for figure in ANALYSES[name].figures(self))]
        return {name: f"{self.figures_dir()}/{name.replace('_', '-')}.png" for name in names}

    def figure_category(self, figure: str) -> str:
        """The Snakemake report's category of an `extra_figures` figure: its analysis's title."""
        for name in self.analyses():
            if figure in ANALYSES[name].figures(self):
                return ANALYSES[name].title
        return "Training"  # the learning curves

    def forest_figure(self) -> str:
        """The overview's forest plot: every variant's difference from the baseline, as tabled."""
        return f"{self.figures_dir()}/forest.png"

    def benchmark_table(self, study_jobs: list[str]) -> list[dict[str, str]]:
        """One row per job upstream of the report: its rule (analyses named) and its benchmark file.

        `study_jobs` are the study-level rules that run (e.g. plot_examples only where a family
        changes images). The report's own benchmark is left out: Snakemake writes it after the
        report, so it cannot be one of the report's inputs. Jobs shared by variants (or by
        studies on the same data) appear once; their times are those of the run that made them.
        """
        rows = [{"rule": "prepare_data", "path": data_benchmark(self.data_key)}]
        rows += [{"rule": "train", "path": job_benchmark("train", self.data_key, run, seed)} for run in self.runs for seed in self.seeds]
        analysed = {
            (analysis, self.run_of(variant), self.probe(variant, analysis).name)
            for analysis in self.analyses()
            for variant in self.analysed(analysis)
        }
        rows += [
            {"rule": f"analyse_run ({analysis})", "path": job_benchmark(f"{analysis}-{probe}", self.data_key, run, seed)}
            for analysis, run, probe in sorted(analysed)
            for seed in self.seeds
        ]
        rows += [{"rule": job, "path": self.study_benchmark(job)} for job in study_jobs]
        return rows

    def training_files(self) -> list[str]:
        """Every (run, seed) provenance file: one training job each, duplicates removed."""
        return sorted({run_file("provenance", self.data_key, run, seed) for run in self.runs for seed in self.seeds})

    def history_table(self) -> list[dict[str, Any]]:
        """One row per (variant, seed): the training history file of its run (JSON-friendly)."""
        return [
            {
                "family": v.family,
                "variant": v.name,
                "seed": seed,
                "run": self.run_of(v),
                "path": run_file("history", self.data_key, self.run_of(v), seed),
            }
            for v in self.variants.values()
            for seed in self.seeds
        ]

    def history_files(self) -> list[str]:
        return sorted({row["path"] for row in self.history_table()})

    def probe_table(self) -> list[dict[str, Any]]:
        """One row per (variant, seed, analysis): which file holds that table (JSON-friendly)."""
        rows = []
        for analysis in self.analyses():
            for variant in self.analysed(analysis):
                for seed in self.seeds:
                    rows.append(
                        {
                            "family": variant.family,
                            "variant": variant.name,
                            "seed": seed,
                            "analysis": analysis,
                            "run": self.run_of(variant),
                            "path": self.probe_file(variant, seed, analysis),
                            "arrays": self.probe_file(variant, seed, analysis, arrays=True),
                        }
                    )
        return rows

    def probe_files(self) -> list[str]:
        return sorted({row["path"] for row in self.probe_table()})

    def artifact_files(self) -> list[str]:
        """Every file of every trained (run, seed) and every analysis output, for `rule all`.

        Snakemake rebuilds a missing intermediate file only for a job it has to run, so a
        deleted model.keras would go unnoticed by a rerun; asked for by the target rule, a
        deleted artifact makes its job (and what depends on it) run again.
        """
        runs = {run_file(kind, self.data_key, run, seed) for run in self.runs for seed in self.seeds for kind in RUN_FILES}
        probes = {
            self.probe_file(variant, seed, analysis, arrays=arrays)
            for analysis in self.analyses()
            for variant in self.analysed(analysis)
            for seed in self.seeds
            for arrays in (False, True)
        }
        return sorted(runs | probes)

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
                    "run": self.run_of(variant),
                }
            )
        return rows
