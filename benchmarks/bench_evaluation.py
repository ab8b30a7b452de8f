"""Benchmark: CPU seconds to evaluate one trained model, a fresh process per run vs the analysis stage.

Before run identity, every (variant, seed) had its own `evaluate` job: a fresh Python that
imported pandas and scikit-learn to compute four metrics from saved probabilities (when no
warm worker was free, or with workers off, that is what a job cost). Now evaluation is a
per-model analysis served by a warm worker: the job's own process is a thin client
(`workflow/scripts/run_job.py`: the standard library and a socket call, without Snakemake's
script preamble), the work runs in a process that has everything imported.

Both paths are measured here, in one run, on the same predictions files:
  (a) a fresh interpreter per run: `python -c` importing the evaluation code, computing the
      metrics of one predictions file and writing them (child CPU time, user + system);
  (b) the analysis stage: the CPU the worker logged for each `analyse_run` job (the work
      itself) plus the CPU of a thin client's imports measured in a fresh child.

    .venv/bin/python benchmarks/bench_evaluation.py [--quick]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, REPO, child_env, header, median, ratio, run_workflow, summary_row, table, verdict, write_summary

TARGET = 5.0  # evaluation CPU per run at least 5x lower
STUDY = {
    "study": "bench-eval",
    "seeds": [1, 2],
    "dataset": {"name": "mnist5k"},
    "training": {"epochs": 1, "early_stopping_patience": 0},
    "families": {"dropout": {"rates": [0.2, 0.4]}, "activation": {"functions": ["tanh", "sigmoid"]}},
}
OLD_EVALUATION = """
import sys, numpy as np, pandas as pd
from ablation_lab.analyses.evaluation import classification_metrics, metrics_table
with np.load(sys.argv[1]) as saved:
    metrics = classification_metrics(saved["y_test"], saved["probabilities_test"])
metrics_table(metrics, {"status": "ok"}).to_csv(sys.argv[2], index=False)
"""
THIN_CLIENT = """
import argparse, json, sys
sys.path.insert(0, sys.argv[1])
import _package
from ablation_lab.runtime.dispatch import run_job
"""


def child_cpu(args: list[str]) -> float:
    """User + system CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, check=True, env=child_env(threads=1), capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def logged_cpu(workdir: Path) -> list[float]:
    """The CPU seconds each evaluation job's work took in its worker (the job logs say)."""
    pattern = re.compile(r"job analyse_run: ([0-9.]+) CPU s")
    found = []
    for log in (workdir / "logs").rglob("evaluation-*.log"):
        match = pattern.search(log.read_text())
        if match:
            found.append(float(match.group(1)))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats of the fresh-process path")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    args = parser.parse_args(argv)
    header("bench_evaluation: evaluation CPU per run, fresh process vs analysis stage", args.quick)
    with tempfile.TemporaryDirectory(prefix="ablation-bench-eval-") as tmp:
        workdir = Path(tmp)
        run_workflow(workdir, STUDY, child_env(threads=1))
        served = logged_cpu(workdir)
        predictions = sorted((workdir / "results").rglob("predictions.npz"))
        repeats = predictions[:3] if args.quick else predictions
        fresh = [child_cpu([PYTHON, "-c", OLD_EVALUATION, str(p), str(workdir / "old.csv")]) for p in repeats]
        clients = [child_cpu([PYTHON, "-c", THIN_CLIENT, str(REPO / "workflow" / "scripts")]) for _ in range(3)]
    old, work, client = median(fresh), median(served), median(clients)
    new = work + client
    speedup = ratio(old, new)
    rows = [
        ("(a) fresh process per run (imports + metrics)", f"{old:.3f}", len(fresh)),
        ("(b) worker's work per analyse_run job (logged)", f"{work:.3f}", len(served)),
        ("(b) thin client's imports (fresh child)", f"{client:.3f}", len(clients)),
        ("(b) total per run", f"{new:.3f}", ""),
    ]
    print(table(rows, ["path", "CPU s per run (median)", "samples"]))
    print(f"ratio (a) / (b): {speedup:.1f}x lower with the analysis stage (target >= {TARGET:g}x: {verdict(speedup >= TARGET)})")
    write_summary(
        args.summary_json,
        [
            summary_row("bench_evaluation", "evaluation CPU s per run, fresh process", f"{old:.3f}"),
            summary_row("bench_evaluation", "evaluation CPU s per run, analysis stage", f"{new:.3f}"),
            summary_row("bench_evaluation", "ratio fresh / analysis stage", f"{speedup:.1f}x", f">= {TARGET:g}x", speedup >= TARGET),
        ],
    )


if __name__ == "__main__":
    main()
