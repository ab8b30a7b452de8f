"""The runtime's face to the Snakefile: the job command, and what a run does at start, success and error.

`rules/common.smk` calls three of them and nothing else of the runtime: `request_argument` and
`job_command` for the rules that a warm worker may serve, and `install` for the handlers. A local run without
conda or apptainer gets warm workers (runtime/worker.py) and a watchdog that stops its jobs
and workers within seconds when Snakemake is gone, even killed with SIGKILL
(runtime/watchdog.py); a cluster run leaves its jobs to the cluster and, on failure, asks
SLURM why (runtime/cluster.py).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

# Linux refuses a single command-line argument over 128 KiB ("Argument list too long"): the
# spec of a variant that drops 25,000 named features is longer. Such a request travels in a file.
MAX_INLINE_REQUEST = 16_384
REQUEST_DIR = Path(".snakemake", "ablation_lab", "requests")


def isolated_deployment(workflow: Any) -> bool:
    """Whether jobs run in a rule environment (conda or apptainer) rather than Snakemake's own."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    settings = workflow.deployment_settings
    methods = set(settings.deployment_method) if settings else set()
    return bool(methods & {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER})


def use_warm_workers(workflow: Any) -> bool:
    """Only local runs without conda or apptainer (a warm worker runs outside any such env).

    Under a cluster executor (profiles/slurm) `local_exec` is false, so the submitting process
    starts no pool; the job processes on the nodes run with --no-hooks, so `on_start` (the only
    caller) never runs there: every cluster job does its work in its own process.
    """
    return workflow.local_exec and not isolated_deployment(workflow)


def job_command(workflow: Any, adapter: str) -> str:
    """The command of the jobs a warm worker may serve: Snakemake's own interpreter, or the rule
    environment's `python` under conda or apptainer, running the standard-library adapter
    (`adapter`, workflow/scripts/run_job.py). A module read from a git repository or GitHub has
    no script on disk: the installed package's `python -m ablation_lab.runtime.adapter` runs
    then, a command that stays the same from run to run (a changed command reruns a job)."""
    python = "python" if isolated_deployment(workflow) else sys.executable
    if not os.path.isfile(adapter):
        return " ".join(shlex.quote(part) for part in (python, "-m", "ablation_lab.runtime.adapter"))
    return " ".join(shlex.quote(part) for part in (python, adapter))


def request_argument(request: str) -> str:
    """A job's JSON request as its command line carries it: inline, or `@file` when too long.

    The file is named by the request's digest, so the same request always gives the same
    argument (Snakemake reruns a job whose params change) and parallel planners agree.
    """
    data = request.encode()
    if len(data) <= MAX_INLINE_REQUEST:
        return request
    path = REQUEST_DIR / f"{hashlib.sha256(data).hexdigest()[:32]}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
    return f"@{path}"


def on_start(workflow: Any) -> None:
    """Record this Snakemake for the watchdog (local runs), then start the warm workers."""
    from ablation_lab.runtime.watchdog import forget_snakemake, record_snakemake

    if workflow.local_exec:
        record_snakemake()
    else:
        forget_snakemake()
    if use_warm_workers(workflow):
        from ablation_lab.runtime.worker import start_pool

        start_pool(workflow.cores)


def on_success() -> None:
    """Stop the workers; the run exits now rather than a second later (see release_scheduler_timers)."""
    from ablation_lab.runtime.watchdog import release_scheduler_timers
    from ablation_lab.runtime.worker import stop_pool

    stop_pool()
    release_scheduler_timers()


def on_error(workflow: Any, log: str) -> None:
    """Stop the workers; on a cluster, log SLURM's reason for each failed job (Snakemake drops it
    when a group job fails)."""
    from ablation_lab.runtime.worker import stop_pool

    stop_pool()
    if workflow.non_local_exec:
        from snakemake.logging import logger

        from ablation_lab.runtime.cluster import report_slurm_failures

        for line in report_slurm_failures(log):
            logger.error(line)


def install(workflow: Any) -> list[str]:
    """The runtime's one entry from the rules: register `on_start`, `on_success` and `on_error`.

    As the main Snakefile, or as a module of a user's Snakefile (snakedeploy: `module ...:
    snakefile: ...`), where Snakemake runs the main Snakefile's handlers only: without them a
    deployed workflow would start no warm worker and every job would pay TensorFlow's start-up
    in its own process (config/test.yaml took 7 min 22 s that way on 2 cores, against well
    under a minute with the workers; docs/your-project.md). A handler is set only where
    Snakemake's empty default is in place, so a user's own `onstart:` is never replaced.
    Returns the handlers it set.
    """

    def start(log: str) -> None:
        on_start(workflow)

    def success(log: str) -> None:
        on_success()

    def error(log: str) -> None:
        on_error(workflow, log)

    handlers = {"_onstart": start, "_onsuccess": success, "_onerror": error}
    unset = [name for name in handlers if getattr(getattr(workflow, name, None), "__name__", "") == "<lambda>"]
    for name in unset:
        setattr(workflow, name, handlers[name])
    return unset
