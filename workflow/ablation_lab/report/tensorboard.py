"""The study's runs as TensorBoard logs: per-epoch curves, the HParams table and parallel coordinates.

Written from the aggregated tables (every run's `history.csv`, its test metrics and its
variant's settings), by one study-level job, so turning TensorBoard on or off never retrains a
model and costs one short job. The layout is Keras's own `TensorBoard` callback's, so a
researcher's other runs and these overlay in one dashboard:

    reports/<study>/tensorboard/<family>/<variant>/seed<k>/train/       epoch_loss, epoch_accuracy
    reports/<study>/tensorboard/<family>/<variant>/seed<k>/validation/  epoch_loss, epoch_accuracy
    reports/<study>/tensorboard/<family>/<variant>/seed<k>/             test_<metric>, the run's hparams
    reports/<study>/tensorboard/                                        the study's hparams config

The events are protocol buffers written with TensorBoard's own writer and summary builders
(no TensorFlow graph, no session); `tensorboard --logdir reports/<study>/tensorboard` reads them.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

# The history's columns, as Keras's callback names its tags (epoch_<metric> under train/ and validation/).
CURVES = {"loss": ("train", "epoch_loss"), "accuracy": ("train", "epoch_accuracy")}
CURVES |= {"val_loss": ("validation", "epoch_loss"), "val_accuracy": ("validation", "epoch_accuracy")}

TEST_METRICS = ("accuracy", "error_rate", "loss", "macro_f1")


def _value(value: Any) -> bool | int | float | str:
    """An hparam value TensorBoard accepts: bool, int, float or str (NumPy scalars unwrapped)."""
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, bool | int | float | str) else str(value)


def run_hparams(variant: dict[str, Any], seed: int) -> dict[str, bool | int | float | str]:
    """What distinguishes one run in the HParams table: family, variant, seed and the variant's settings."""
    hparams: dict[str, bool | int | float | str] = {"family": variant["family"], "variant": variant["variant"], "seed": int(seed)}
    hparams |= {str(key): _value(value) for key, value in (variant.get("coords") or {}).items() if value is not None}
    return hparams


class _Writer:
    """One event file in one folder; steps and values as the tables give them."""

    def __init__(self, folder: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        folder.mkdir(parents=True, exist_ok=True)
        self._events = EventFileWriter(str(folder))

    def summary(self, summary: Any, step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._events.add_event(Event(step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        if not math.isnan(value):
            self.summary(scalar_pb(tag, float(value)), step)

    def close(self) -> None:
        self._events.close()


def _write_run(folder: Path, trial: str, history: pd.DataFrame, metrics: pd.Series | None, hparams: dict[str, Any]) -> None:
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    writers = {name: _Writer(folder / name) for name in ("train", "validation")}
    for column, (split, tag) in CURVES.items():
        if column in history:
            for epoch, value in zip(history["epoch"], history[column], strict=True):
                writers[split].scalar(tag, value, int(epoch))
    for writer in writers.values():
        writer.close()
    root = _Writer(folder)
    root.summary(hparams_pb(hparams, trial_id=trial))
    if metrics is not None:
        step = int(metrics.get("epochs_trained", 0) or 0)
        for metric in TEST_METRICS:
            if metric in metrics:
                root.scalar(f"test_{metric}", float(metrics[metric]), step)
    root.close()


def _study_config(variants: list[dict[str, Any]], seeds: list[int], out: Path) -> None:
    """The experiment's declared hparams and metrics: the HParams dashboard's columns."""
    from tensorboard.plugins.hparams import api

    runs = [run_hparams(variant, seed) for variant in variants for seed in seeds]
    first = ["family", "variant", "seed"]
    names = first + sorted({name for run in runs for name in run} - set(first))
    hparams = []
    for name in names:
        values = sorted({run[name] for run in runs if name in run}, key=str)
        kinds = {type(value) for value in values}
        domain = api.Discrete(values) if len(kinds) == 1 and kinds <= {int, float, str, bool} else None
        hparams.append(api.HParam(name, domain))
    metrics = [api.Metric(f"test_{metric}", display_name=f"test {metric}") for metric in TEST_METRICS]
    metrics += [api.Metric(tag, group=split, display_name=f"{split} {tag}") for split, tag in sorted(set(CURVES.values()))]
    writer = _Writer(out)
    writer.summary(api.hparams_config_pb(hparams=hparams, metrics=metrics))
    writer.close()


def write_logs(history: pd.DataFrame, runs: pd.DataFrame, variants: list[dict[str, Any]], out: str | Path) -> int:
    """Every (variant, seed)'s TensorBoard logs under `out` (replaced whole); returns the number of runs written."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    seeds = sorted({int(seed) for seed in runs["seed"]}) if len(runs) else []
    histories = dict(list(history.groupby(["family", "variant", "seed"]))) if len(history) else {}
    metrics = {(row["family"], row["variant"], int(row["seed"])): row for _, row in runs.iterrows()}
    written = 0
    for variant in variants:
        for seed in seeds:
            key = (variant["family"], variant["variant"], seed)
            if key not in metrics and key not in histories:
                continue
            frame = histories.get(key, pd.DataFrame(columns=["epoch"]))
            trial = f"{variant['family']}/{variant['variant']}/seed{seed}"
            _write_run(out / trial, trial, frame, metrics.get(key), run_hparams(variant, seed))
            written += 1
    _study_config(variants, seeds, out)
    return written
