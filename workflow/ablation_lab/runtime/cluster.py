"""What a failed cluster run tells its user: each SLURM job that failed, SLURM's reason, its log.

The SLURM executor plugin reports a failed job as "SLURM-job '70' failed, SLURM status is:
'FAILED' ...", but Snakemake 9 prints that message only for a single job: for a group job
(profiles/slurm groups every training with its analyses) it shows "Error in group run" and
drops SLURM's status. So the workflow's `onerror` asks SLURM once, at the end, about every job
the run submitted (their ids and logs are in Snakemake's own log) and names the ones that failed.

Standard library only: it runs in the Snakemake process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# What the plugin logs for each submission (snakemake-executor-plugin-slurm 2.x).
SUBMISSION = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")
# SLURM job states that end a job without success (sacct's names; CANCELLED may carry "by <uid>").
States = dict[str, tuple[str, str, str]]  # SLURM job id -> (state, exit code, reason)
FAILED_STATES = ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "BOOT_FAIL", "DEADLINE", "PREEMPTED")


@dataclass(frozen=True)
class SlurmFailure:
    job_id: str
    state: str
    exit_code: str
    reason: str
    log: str

    def __str__(self) -> str:
        return f"SLURM job {self.job_id} {self.state} (exit code {self.exit_code}, reason: {self.reason}); its SLURM log: {self.log}"


def submitted_jobs(snakemake_log: str) -> dict[str, str]:
    """SLURM job id -> its log file, for every job a Snakemake log says it submitted."""
    return dict(SUBMISSION.findall(snakemake_log))


def sacct_states(job_ids: list[str]) -> States:
    """SLURM job id -> (state, exit code, reason) from `sacct`; empty when sacct cannot tell."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode,Reason"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = (line.split("|") for line in out.splitlines() if line.count("|") == 3)
    return {job: (state, exit_code, reason) for job, state, exit_code, reason in rows}


def failed_slurm_jobs(snakemake_log: str, query: Callable[[list[str]], States] = sacct_states) -> list[SlurmFailure]:
    """Every SLURM job of this run that ended without success, with SLURM's state and reason."""
    logs = submitted_jobs(snakemake_log)
    states = query(sorted(logs, key=int))
    return [
        SlurmFailure(job, state, exit_code, reason, logs[job])
        for job, (state, exit_code, reason) in sorted(states.items(), key=lambda item: int(item[0]))
        if job in logs and state.split()[0] in FAILED_STATES
    ]


def report_slurm_failures(snakemake_logs: str | list[str] | None) -> list[str]:
    """The lines `onerror` prints: one per failed SLURM job (none for a run that submitted none).

    `snakemake_logs` is what `onerror` receives as `log`: Snakemake's log file(s) of this run.
    """
    paths = [snakemake_logs] if isinstance(snakemake_logs, str) else list(snakemake_logs or [])
    text = "".join(Path(path).read_text(errors="replace") for path in paths if Path(path).is_file())
    return [str(failure) for failure in failed_slurm_jobs(text)]
