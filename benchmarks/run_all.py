"""Run every benchmark in sequence (`make bench`) and end with one summary table.

Each benchmark runs as its own process, prints its own tables as it goes, and hands its
key figures back through a JSON file. `--quick` is passed through (small sizes, under a
minute each): a smoke test that the benchmarks work, not figures to quote.

    .venv/bin/python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, header, machine_line, table, verdict

BENCHMARKS = (
    "bench_training.py",
    "bench_study.py",
    "bench_rerun.py",
    "bench_evaluation.py",
    "bench_knockout.py",
    "bench_efficiency.py",
    "bench_learnable.py",
    "bench_elasticity.py",
    "bench_cnn.py",
    "bench_faults.py",
    "bench_recovery.py",
    "bench_client.py",
)


def run_one(script: str, quick: bool, summary_path: Path) -> tuple[int, float]:
    """One benchmark with its output streamed live; returns its exit status and wall seconds."""
    command = [PYTHON, str(Path(__file__).resolve().parent / script), "--summary-json", str(summary_path)]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    status = subprocess.run(command, check=False).returncode
    print(flush=True)
    return status, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: each benchmark in under a minute")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args(argv)
    header("Ablation Lab benchmarks", args.quick)
    print(flush=True)
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="ablation-bench-") as tmp:
        for script in args.only or BENCHMARKS:
            summary_path = Path(tmp) / f"{script}.json"
            status, seconds = run_one(script, args.quick, summary_path)
            if status != 0 or not summary_path.exists():
                failed.append(script)
                rows.append((script, "FAILED", f"exit status {status}", "", ""))
                continue
            for row in json.loads(summary_path.read_text()):
                rows.append((row["benchmark"], row["measure"], row["value"], row["target"], verdict(row["ok"])))
            rows.append((script, "(benchmark wall time)", f"{seconds:.0f} s", "", ""))
    print("=== summary ===")
    print(machine_line())
    print(table(rows, ["benchmark", "measure", "value", "target", "verdict"]))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
