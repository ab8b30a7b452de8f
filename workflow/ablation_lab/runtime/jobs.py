"""The jobs: one function per rule; the adapters in workflow/scripts/ only unpack `snakemake` into a `run_job` call.

Keeping the jobs here means every rule's logic is importable and unit-tested, and a job can
be run by hand (or from a notebook) with plain paths.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab import TRAINING_CODE_VERSION, __version__
from ablation_lab.analyses.evaluation import EVALUATION
from ablation_lab.artifacts import atomic_path, check_digest, file_digest, read_json, write_json, write_npz, write_table

log = logging.getLogger("ablation_lab")
# Test-only fault injection: comma-separated globs of run names whose training raises
# (tests/test_cluster.py makes a job fail on SLURM with it). Unset in normal use.
FAIL_RUNS_ENV = "ABLATION_LAB_FAIL_RUNS"
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "pandas", "snakemake")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "ablation_lab": __version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def prepare_data(dataset_cfg: dict[str, Any], data_out: str, meta_out: str) -> dict[str, Any]:
    from ablation_lab.data.split import prepare, save_split

    split = prepare(dataset_cfg)
    save_split(split, data_out, meta_out)
    log.info("prepared %s: %s", split.meta["name"], split.meta["sizes"])
    return split.meta


def workflow_commit() -> dict[str, Any]:
    """The git commit of the workflow's source tree, and whether it had uncommitted edits."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


class InjectedFailure(RuntimeError):
    """Raised on purpose, by ABLATION_LAB_FAIL_RUNS: a test of failure reporting."""


def fail_if_injected(run: str) -> None:
    """Raise when ABLATION_LAB_FAIL_RUNS names this run: the cluster test's failing variant.

    A test needs a training job that really fails where it runs (a SLURM node) to check what
    Snakemake reports; an environment variable reaches that job (sbatch exports it) without
    adding anything to the study's config, so no result depends on it.
    """
    import fnmatch

    patterns = [p for p in os.environ.get(FAIL_RUNS_ENV, "").split(",") if p]
    if any(fnmatch.fnmatchcase(run, pattern) for pattern in patterns):
        raise InjectedFailure(f"{FAIL_RUNS_ENV}={os.environ[FAIL_RUNS_ENV]} names run {run!r}: failing on purpose")


def train(spec: dict[str, Any], seed: int, threads: int, data: str, meta: str, out: dict[str, str], gpu: int = 0) -> str:
    """Train one (run, seed): saves the model, history, validation/test probabilities and provenance.

    `gpu` is the job's `gpu` resource: with 1 it trains on the GPU the scheduler gave it.
    """
    from ablation_lab.ablations import apply_transforms
    from ablation_lab.data.split import load_split
    from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

    fail_if_injected(Path(out["model"]).parent.parent.name)
    device = configure_tensorflow(threads, gpu=gpu > 0)
    started = dt.datetime.now(dt.UTC)
    split = load_split(data, meta)
    arrays = apply_transforms(split.arrays, spec["transforms"], seed, split.meta["n_classes"])
    result = train_model(spec, arrays, split.meta["n_classes"], seed)
    probabilities = {f"probabilities_{s}": predict_proba(result.model, arrays[f"x_{s}"]) for s in ("val", "test")}

    with atomic_path(out["model"]) as tmp_model:
        result.model.save(tmp_model)
    write_table(out["history"], pd.DataFrame(result.history, columns=["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]))
    write_npz(out["predictions"], **probabilities, y_val=arrays["y_val"], y_test=arrays["y_test"])
    write_json(
        out["provenance"],
        {
            "run": Path(out["model"]).parent.parent.name,
            "seed": seed,
            "spec": spec,
            "status": result.status,
            "diverged_epoch": result.diverged_epoch,
            "best_epoch": result.best_epoch,
            "epochs_trained": len(result.history),
            "train_seconds": round(result.seconds, 3),
            "threads": threads,
            "device": device,
            "data": {"fingerprint": split.meta["fingerprint"], "dataset": split.meta["name"], "sizes": split.meta["sizes"]},
            "code_version": TRAINING_CODE_VERSION,
            "workflow": workflow_commit(),
            "digests": {kind: file_digest(out[kind]) for kind in ("model", "history", "predictions")},
            "versions": versions(),
            "host": socket.gethostname(),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    log.info("trained %s seed %d: %s in %.2f s", Path(out["model"]).parent.parent.name, seed, result.status, result.seconds)
    return result.status


def analyse_run(
    analysis: str,
    probe: dict[str, Any],
    spec: dict[str, Any],
    seed: int,
    run_dir: str,
    data: str,
    meta: str,
    out: str,
    arrays_out: str,
    threads: int = 1,
) -> int:
    """One per-model analysis of one trained model under one test view -> its tidy table (+ per-example arrays).

    TensorFlow is configured as in a warm worker (threads, deterministic ops, no GPU): an
    analysis run in its own process (a cluster job) gives the same numbers as one run in a
    worker, to the last bit.
    """
    from ablation_lab.analyses.registry import RunContext, run_analysis
    from ablation_lab.training.train import configure_tensorflow

    configure_tensorflow(threads)

    context = RunContext(Path(run_dir), data, meta, spec, seed, list(probe["view"]))
    table, arrays = run_analysis(analysis, context, probe["params"])
    write_table(out, table)
    write_npz(arrays_out, **arrays)
    log.info("%s of %s seed %d:\n%s", analysis, Path(run_dir).parent.name, seed, table.to_string(index=False))
    return len(table)


def aggregate(
    probes: list[dict[str, Any]],
    histories: list[dict[str, Any]],
    variants: list[dict[str, Any]],
    params: dict[str, dict[str, Any]],
    margin: float,
    extra: list[str],
    out: dict[str, str],
) -> None:
    """Every variant's per-model tables into the study's tables (CSV and Parquet), plus statistics and claims."""
    from ablation_lab.statistics.claims import check_findings
    from ablation_lab.statistics.tables import compare_to_baseline, runs_table, summarise

    tables = collect_probes(probes)
    tidy = tables[EVALUATION]
    runs = runs_table(tidy, variants)
    hits = collect_hits(probes)
    write_table(out["history"], collect_histories(histories))
    write_table(out["tidy_csv"], tidy)
    write_table(out["tidy_parquet"], tidy)
    write_table(out["runs"], runs)
    write_table(out["summary"], summarise(runs, hits=hits))
    write_table(out["comparisons"], compare_to_baseline(runs, hits=hits, margin=margin))
    write_table(out["findings"], check_findings(runs, variants, hits=hits, margin=margin))
    from ablation_lab.analyses.base import StudyTables
    from ablation_lab.analyses.registry import ANALYSES

    for name in extra:  # every other analysis's joined table, then its study-level summaries
        if name in ANALYSES:
            write_table(out[name], tables.get(name, pd.DataFrame()))
            if ANALYSES[name].summarise:
                study = StudyTables(tables.get(name), collect_arrays(probes, name), runs, hits, variants, params[name])
                for summary, table in ANALYSES[name].summarise(study).items():
                    write_table(out[summary], table)


def with_variant_columns(table: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    """A per-run table with the variant's family, name, seed and run in front (tables of many runs concatenate)."""
    for position, key in enumerate(("family", "variant", "seed", "run")):
        table.insert(position, key, row[key])
    return table


def collect_histories(histories: list[dict[str, Any]]) -> pd.DataFrame:
    """Every (variant, seed)'s per-epoch training history, with the variant's columns in front;
    each checked first against the digest its training job recorded (a corrupted one is named)."""
    for row in histories:
        check_history(row["path"])
    return pd.concat([with_variant_columns(pd.read_csv(row["path"]), row) for row in histories], ignore_index=True)


def check_history(path: str | Path) -> None:
    provenance = Path(path).with_name("provenance.json")
    digests = read_json(provenance).get("digests", {}) if provenance.exists() else {}
    check_digest(path, digests.get("history"), "train")


def collect_hits(probes: list[dict[str, Any]]) -> dict[tuple[str, str, int], np.ndarray]:
    """(family, variant, seed) -> which test examples its model got right, under its test view."""
    hits = {}
    for row in probes:
        if row["analysis"] == EVALUATION:
            with np.load(row["arrays"]) as saved:
                hits[row["family"], row["variant"], row["seed"]] = saved["predicted"] == saved["y_test"]
    return hits


def collect_arrays(probes: list[dict[str, Any]], analysis: str) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """(family, variant, seed) -> the per-example arrays one analysis saved beside its table."""
    found = {}
    for row in probes:
        if row["analysis"] == analysis:
            with np.load(row["arrays"]) as saved:
                found[row["family"], row["variant"], row["seed"]] = {key: saved[key] for key in saved.files}
    return found


def collect_probes(probes: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """Analysis name -> its tables of every (variant, seed), with the variant's columns in front."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for row in probes:
        parts.setdefault(row["analysis"], []).append(with_variant_columns(pd.read_csv(row["path"]), row))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def plot_figures(
    families: dict[str, dict[str, str]],
    variants: list[dict[str, Any]],
    runs: str,
    summary: str,
    comparisons: str,
    out: dict[str, str],
) -> None:
    """The figure of each family and the overview's forest plot, from the study's tables.

    `families` maps a family to its title; `comparisons` (the tested differences) feeds the
    forest plot. `out` maps family names and `forest` to paths. The figures of the analyses
    are drawn beside these, by `plot_analyses` in its own job, on the other core.
    """
    from ablation_lab.report.figures import plot_family, plot_forest, plot_heatmap

    runs_table, summary_table = pd.read_csv(runs), pd.read_csv(summary)
    for family, info in families.items():
        if "-x-" in family:
            plot_heatmap(summary_table, variants, family, info["title"], out[family])
        else:
            plot_family(runs_table, summary_table, family, info["title"], out[family])
    plot_forest(pd.read_csv(comparisons), variants, out["forest"])


def plot_analyses(variants: list[dict[str, Any]], tables: dict[str, str], out: dict[str, str]) -> None:
    """The learning curves and the figures of each analysis the study ran (its `plot`).

    `tables` holds `history` and the analyses' tables (paths); `out` maps figure names
    (`Study.extra_figures`) to paths.
    """
    from ablation_lab.analyses.registry import ANALYSES
    from ablation_lab.report.figures import plot_learning_curves

    plot_learning_curves(pd.read_csv(tables["history"]), variants, out["learning_curves"])
    for name, analysis in ANALYSES.items():
        if analysis.plot and name in tables:
            analysis.plot(tables, variants, out)


def tensorboard(history: str, runs: str, variants: list[dict[str, Any]], out: str) -> None:
    """Every run's curves, test metrics and hparams as TensorBoard logs, from the study's tables."""
    from ablation_lab.report.tensorboard import write_logs

    written = write_logs(pd.read_csv(history), pd.read_csv(runs), variants, out)
    print(f"TensorBoard logs of {written} runs in {out}: tensorboard --logdir {out}")


def plot_examples(families: list[str], variants: list[dict[str, Any]], data: str, meta: str, seed: int, out: dict[str, str]) -> None:
    """What the model sees: test images as each variant of each image-changing family transforms them."""
    from ablation_lab.data.split import load_split
    from ablation_lab.report.figures import plot_examples as draw

    split = load_split(data, meta)
    for family in families:
        draw(split.arrays, variants, family, split.meta["input_shape"], out[family], seed)


def read_benchmarks(rows: list[dict[str, str]]) -> pd.DataFrame:
    """One row per job: its rule and wall seconds, from Snakemake's benchmark TSV files.

    Only wall seconds: a job served by a warm worker is measured from its thin client, so the
    files' CPU and memory columns would describe the client, not the work.
    """
    seconds = [float(pd.read_csv(row["path"], sep="\t")["s"].mean()) for row in rows]
    return pd.DataFrame({"rule": [row["rule"] for row in rows], "path": [row["path"] for row in rows], "s": seconds})


def report(
    study_cfg: dict[str, Any],
    meta: str,
    tables: dict[str, str],
    figures: dict[str, list[str]],
    sharing: dict[str, list[str]],
    out: str,
    benchmarks: list[dict[str, str]] | None = None,
) -> str:
    from ablation_lab.artifacts import read_table, write_atomic
    from ablation_lab.models.model_file import model_source
    from ablation_lab.report.page import ReportInputs, render

    inputs = ReportInputs(
        study=study_cfg,
        meta=read_json(meta),
        tables={name: read_table(path) for name, path in tables.items()} | {"benchmarks": read_benchmarks(benchmarks or [])},
        figures=figures,
        versions=versions(),
        sharing=sharing,
        machine={**workflow_commit(), "host": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()},
        model_source=model_source(study_cfg.get("model", {})),
    )
    page = render(inputs)
    write_atomic(out, lambda tmp: tmp.write_text(page))
    log.info("report written to %s", out)
    return out
