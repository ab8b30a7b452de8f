"""One function per workflow job; the scripts in workflow/scripts/ only unpack `snakemake`.

Keeping the jobs here means every rule's logic is importable and unit-tested, and a job can
be run by hand (or from a notebook) with plain paths.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab import TRAINING_CODE_VERSION, __version__
from ablation_lab.io import atomic_path, read_json, write_json, write_npz, write_table

log = logging.getLogger("ablation_lab")
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
    from ablation_lab.data import prepare, save_split

    split = prepare(dataset_cfg)
    save_split(split, data_out, meta_out)
    log.info("prepared %s: %s", split.meta["name"], split.meta["sizes"])
    return split.meta


def train(spec: dict[str, Any], seed: int, threads: int, data: str, meta: str, out: dict[str, str]) -> str:
    """Train one (variant, seed): saves the model, history, test probabilities and provenance."""
    from ablation_lab.ablations import apply_transforms
    from ablation_lab.data import load_split
    from ablation_lab.train import configure_tensorflow, predict_proba, train_model

    configure_tensorflow(threads)
    started = dt.datetime.now(dt.UTC)
    split = load_split(data, meta)
    arrays = apply_transforms(split.arrays, spec["transforms"], seed)
    result = train_model(spec, arrays, split.meta["n_classes"], seed)
    probabilities = predict_proba(result.model, arrays["x_test"])

    with atomic_path(out["model"]) as tmp_model:
        result.model.save(tmp_model)
    write_table(out["history"], pd.DataFrame(result.history, columns=["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]))
    write_npz(out["predictions"], probabilities=probabilities, y_true=arrays["y_test"])
    write_json(
        out["provenance"],
        {
            "variant": f"{spec['family']}/{spec['variant']}",
            "seed": seed,
            "spec": spec,
            "status": result.status,
            "diverged_epoch": result.diverged_epoch,
            "best_epoch": result.best_epoch,
            "epochs_trained": len(result.history),
            "train_seconds": round(result.seconds, 3),
            "threads": threads,
            "data": {"fingerprint": split.meta["fingerprint"], "dataset": split.meta["name"], "sizes": split.meta["sizes"]},
            "code_version": TRAINING_CODE_VERSION,
            "versions": versions(),
            "host": socket.gethostname(),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    log.info("trained %s/%s seed %d: %s in %.2f s", spec["family"], spec["variant"], seed, result.status, result.seconds)
    return result.status


def evaluate(
    predictions: str, provenance: str, meta: str, run: dict[str, Any], metrics_out: str, confusion_out: str
) -> list[dict[str, Any]]:
    """Tidy metrics and the confusion matrix of one (variant, seed)."""
    from ablation_lab.evaluate import classification_metrics, confusion_table, metrics_table

    with np.load(predictions) as saved:
        probabilities, y_true = saved["probabilities"], saved["y_true"]
    record = read_json(provenance)
    class_names = read_json(meta)["class_names"]
    metrics = classification_metrics(y_true, probabilities)
    metrics |= {"epochs_trained": record["epochs_trained"], "train_seconds": record["train_seconds"]}
    if record["diverged_epoch"] is not None:
        metrics["diverged_epoch"] = record["diverged_epoch"]
    table = metrics_table(metrics, {**run, "status": record["status"]})
    write_table(metrics_out, table)
    confusion = confusion_table(y_true, probabilities, class_names)
    write_table(confusion_out, confusion.assign(**run))
    log.info("metrics:\n%s", table.to_string(index=False))
    return table.to_dict("records")


def analyse(metrics_files: list[str], variants: list[dict[str, Any]], out: dict[str, str]) -> None:
    """All runs into one tidy table (CSV and Parquet), plus per-variant statistics and claims."""
    from ablation_lab.analysis import check_findings, collect_metrics, compare_to_baseline, runs_table, summarise

    tidy = collect_metrics(metrics_files)
    runs = runs_table(tidy, variants)
    write_table(out["tidy_csv"], tidy)
    write_table(out["tidy_parquet"], tidy)
    write_table(out["runs"], runs)
    write_table(out["summary"], summarise(runs))
    write_table(out["comparisons"], compare_to_baseline(runs))
    write_table(out["findings"], check_findings(runs, variants))


def plot_family(family: str, title: str, variants: list[dict[str, Any]], runs: str, summary: str, out: str) -> None:
    from ablation_lab.plots import plot_family as draw_points
    from ablation_lab.plots import plot_heatmap

    summary_table = pd.read_csv(summary)
    if "-x-" in family:
        plot_heatmap(summary_table, variants, family, title, out)
    else:
        draw_points(pd.read_csv(runs), summary_table, family, title, out)


def plot_examples(family: str, variants: list[dict[str, Any]], data: str, meta: str, seed: int, out: str) -> None:
    from ablation_lab.data import load_split
    from ablation_lab.plots import plot_examples as draw

    split = load_split(data, meta)
    draw(split.arrays, variants, family, split.meta["input_shape"], out, seed)


def report(study_cfg: dict[str, Any], meta: str, tables: dict[str, str], figures: dict[str, list[str]], out: str) -> str:
    from ablation_lab.io import write_atomic
    from ablation_lab.report import render

    page = render(
        study_cfg,
        read_json(meta),
        pd.read_csv(tables["summary"]),
        pd.read_csv(tables["comparisons"]),
        pd.read_csv(tables["findings"]),
        pd.read_csv(tables["runs"]),
        figures,
        versions(),
    )
    write_atomic(out, lambda tmp: tmp.write_text(page))
    log.info("report written to %s", out)
    return out
