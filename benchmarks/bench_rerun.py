"""Benchmark 3: what a rerun costs: nothing changed, and one dropout rate changed.

A small study (3 dropout rates, 1 seed, 1 epoch) runs once in full in a fresh temporary
directory; then (a) `snakemake --cores 2` with everything up to date and (b) the same after
one rate in the config is changed, which makes one new variant. (b) is compared with the
median training job's time, read from the `benchmark:` files Snakemake wrote
(results/benchmarks/.../train.tsv, column `s`), measured on the same machine in the same run.

Targets: (a) under 5 s; (b) under 2 training jobs' time plus the report stage (the analyse,
plot and report jobs' own times, from their benchmark files; the two plot jobs run side by
side, so the longer counts). A lone changed variant cannot
share a warm worker's TensorFlow start-up with other jobs, so "a training job" is measured
two ways: the median job of the full run (warm workers, the strict reading) and (c) a
training job run in its own process (ABLATION_LAB_WORKERS=0), what one job costs alone.

    .venv/bin/python benchmarks/bench_rerun.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    child_env,
    header,
    median,
    ratio,
    run_workflow,
    summary_row,
    table,
    verdict,
    write_summary,
)

NOOP_TARGET_S = 5.0
STUDY = "bench_rerun"


def study_config(rates: list[float]) -> dict[str, Any]:
    return {
        "study": STUDY,
        "seeds": [1],
        "dataset": {"name": "mnist5k"},
        "training": {"epochs": 1, "early_stopping_patience": 0},
        "families": {"dropout": {"rates": rates}},
    }


def run_snakemake(workdir: Path, rates: list[float], workers: bool = True) -> float:
    """Run the workflow on the study with `rates`; return the wall seconds.

    `workers=False` runs every job in its own process (ABLATION_LAB_WORKERS=0): the cost of
    a training job on its own, which is what a lone changed variant pays either way.
    """
    env = child_env(threads=None)
    if not workers:
        env["ABLATION_LAB_WORKERS"] = "0"
    return run_workflow(workdir, study_config(rates), env)


def job_seconds(path: Path) -> float:
    """Column `s` of a Snakemake benchmark file (one row per repeat; the first is used)."""
    with path.open(newline="") as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def train_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "results" / "benchmarks").rglob("train.tsv"))


SIDE_BY_SIDE = ("plot_figures", "plot_analyses")  # both wait only for aggregate: the stage waits for the longer


def report_stage_seconds(workdir: Path) -> float:
    """The jobs after evaluation (aggregate, plots, report) rerun whenever the variant list
    changes: their seconds one after the other, the two plot jobs counted as the longer."""
    stage = workdir / "results" / "benchmarks" / STUDY
    seconds = {path.stem: job_seconds(path) for path in stage.glob("*.tsv")}
    plots = [seconds.pop(name) for name in SIDE_BY_SIDE if name in seconds]
    return sum(seconds.values()) + max(plots, default=0.0)


def jobs_since(workdir: Path, since: float) -> list[tuple[str, float]]:
    """The jobs a run executed (their benchmark files were rewritten after `since`) and their seconds."""
    root = workdir / "results" / "benchmarks"
    return [
        (str(path.relative_to(root).with_suffix("")), job_seconds(path))
        for path in sorted(root.rglob("*.tsv"))
        if path.stat().st_mtime >= since
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 dropout rate, one no-op rerun")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header("bench_rerun: no-op rerun and one changed variant", args.quick)
    rates, noop_repeats = ([0.2], 1) if args.quick else ([0.0, 0.2, 0.4], 3)
    changed = [*rates[:-1], 0.5]
    print(f"study: dropout rates {rates} (+ baseline), 1 seed, 1 epoch; then rate {rates[-1]} -> 0.5")
    with tempfile.TemporaryDirectory(prefix="ablation-bench-rerun-") as tmp:
        workdir = Path(tmp)
        full = run_snakemake(workdir, rates)
        print(f"  full run: {full:.1f} s", flush=True)
        noop = median([run_snakemake(workdir, rates) for _ in range(noop_repeats)])
        print(f"  no-op rerun: {noop:.2f} s (median of {noop_repeats})", flush=True)
        before = set(train_files(workdir))
        report_stage = report_stage_seconds(workdir)
        since = time.time()
        one_changed = run_snakemake(workdir, changed)
        rerun_jobs = jobs_since(workdir, since)
        retrained = len(set(train_files(workdir)) - before)
        train_jobs = [job_seconds(path) for path in train_files(workdir)]
        # (c) another changed rate, every job in its own process: a cold training job's cost
        cold_rates = [*rates[:-1], 0.6]
        since_cold = time.time()
        cold_run = run_snakemake(workdir, cold_rates, workers=False)
        cold_jobs = dict(jobs_since(workdir, since_cold))
    cold_train = next(seconds for name, seconds in cold_jobs.items() if name.endswith("/train"))
    cold_threshold = 2 * cold_train + report_stage
    train_median = median(train_jobs)
    threshold = 2 * train_median + report_stage
    rows = [
        ("median training job (train.tsv s)", f"{train_median:.2f}", "1.00", ""),
        ("report stage (analyse+plots+report)", f"{report_stage:.2f}", f"{ratio(report_stage, train_median):.2f}", ""),
        ("(a) no-op rerun", f"{noop:.2f}", f"{ratio(noop, train_median):.2f}", f"< {NOOP_TARGET_S:g} s: {verdict(noop < NOOP_TARGET_S)}"),
        (
            f"(b) one changed variant ({retrained} retrained)",
            f"{one_changed:.2f}",
            f"{ratio(one_changed, train_median):.2f}",
            f"< {threshold:.1f} s: {verdict(one_changed < threshold)}",
        ),
    ]
    rows += [
        ("cold training job (own process)", f"{cold_train:.2f}", f"{ratio(cold_train, train_median):.2f}", ""),
        (
            "(c) one changed variant, no workers",
            f"{cold_run:.2f}",
            f"{ratio(cold_run, train_median):.2f}",
            f"< {cold_threshold:.1f} s: {verdict(cold_run < cold_threshold)}",
        ),
    ]
    print()
    print(table(rows, ["step", "seconds", "/ train job", "target"]))
    print(
        f"\n(b) / cold training job: {ratio(one_changed, cold_train):.2f}  "
        f"(target: < 2 + report stage / cold job = {ratio(cold_threshold, cold_train):.2f}): {verdict(one_changed < cold_threshold)}"
    )
    print(
        f"\n(b) / median training job: {ratio(one_changed, train_median):.2f}  (target: < 2 + report stage / train job = {ratio(threshold, train_median):.2f})"
    )
    print(f"({len(train_jobs)} training jobs' benchmark files; the full first run took {full:.1f} s)")
    in_jobs = sum(seconds for _, seconds in rerun_jobs)
    print(f"jobs run by (b): {', '.join(f'{name} {seconds:.1f} s' for name, seconds in rerun_jobs)}")
    print(f"  their sum {in_jobs:.1f} s; (b) minus that sum {one_changed - in_jobs:.1f} s (Snakemake start-up, DAG, job launches)")
    write_summary(
        args.summary_json,
        [
            summary_row("rerun", "no-op rerun seconds", f"{noop:.2f}", f"< {NOOP_TARGET_S:g} s", noop < NOOP_TARGET_S),
            summary_row(
                "rerun",
                "one changed variant / cold train job",
                f"{ratio(one_changed, cold_train):.2f}",
                f"< {ratio(cold_threshold, cold_train):.2f} (2 jobs + report)",
                one_changed < cold_threshold,
            ),
            summary_row(
                "rerun",
                "one changed variant / median warm train job",
                f"{ratio(one_changed, train_median):.2f}",
                f"< {ratio(threshold, train_median):.2f} (2 jobs + report)",
                one_changed < threshold,
            ),
        ],
    )


if __name__ == "__main__":
    main()
