"""Faults of the disk under a run: a read-only results folder, a write that fails mid-run (the disk full).

There is no root-free way to mount a small tmpfs, so a full disk is simulated with
RLIMIT_FSIZE in the run's process (inherited by every job and worker it starts): a write
past the limit fails with EFBIG ("File too large"; Python ignores SIGXFSZ), as a write to a
full disk fails with ENOSPC. A read-only folder is a folder without write permission, for a
user without root's capabilities (as root, the run drops CAP_DAC_OVERRIDE with setpriv).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import ROOT, SNAKEMAKE, write_config

pytestmark = pytest.mark.workflow

STUDY = {
    "study": "small",
    "seeds": [1],
    "dataset": {"name": "digits"},  # its split.npz is about 470 KB
    "model": {"hidden_units": [4096]},  # model.keras over 1 MB
    "training": {"epochs": 1, "early_stopping_patience": 0},
    "families": {"dropout": {"rates": [0.5]}},
}
# root writes to any folder: as root, the run drops the capabilities that let it (as another user would be)
AS_A_USER = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner") if os.geteuid() == 0 else ()
FILE_LIMIT = 700 << 10  # the split fits, a trained model does not: the run fails after its first job wrote


def run(workdir: Path, config: Path, *args: str, preexec=None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, preexec_fn=preexec, check=False
    )


def verify(workdir: Path, config: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ablation_lab", "verify", str(config)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300, check=False)


def temporaries(workdir: Path) -> list[Path]:
    """Half-written artifacts: atomic_path's temporaries are hidden files beside their target."""
    return [p for folder in ("results", "reports") for p in (workdir / folder).rglob(".*") if p.is_file()]


def test_a_write_that_fails_mid_run_then_a_rerun_leaves_nothing_corrupt(tmp_path):
    config = write_config(tmp_path, STUDY)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))

    failed = run(tmp_path, config, "--cores", "1", preexec=small_disk)
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert (tmp_path / "results").is_dir() and list((tmp_path / "results").glob("digits-*/split.npz")), "the data job wrote"
    assert not list((tmp_path / "results").rglob("model.keras")), "no model is half there"
    assert not temporaries(tmp_path), temporaries(tmp_path)
    assert "File too large" in failed.stdout or "File too large" in "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))

    # the limit lifted (space freed): the documented recovery finishes the study without redoing the data
    rerun = run(tmp_path, config, "--cores", "2", "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "rule prepare_data:" not in rerun.stdout
    checked = verify(tmp_path, config)
    assert checked.returncode == 0 and "2 trained runs checked, 0 problem(s)" in checked.stderr, checked.stdout + checked.stderr
    assert not temporaries(tmp_path) and (tmp_path / "reports" / "small" / "report.html").exists()


def test_a_read_only_results_folder_is_one_line_and_nothing_is_written(tmp_path):
    config = write_config(tmp_path, {**STUDY, "model": {"hidden_units": [4]}})
    results = tmp_path / "results"
    results.mkdir()
    (results / "kept.txt").write_text("from an earlier run\n")
    results.chmod(0o555)
    try:
        done = run(tmp_path, config, "--cores", "1", prefix=AS_A_USER)
        check = [*AS_A_USER, sys.executable, "-m", "ablation_lab", "check", str(config)]
        checked = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    finally:
        results.chmod(0o755)
    lines = [line for line in done.stdout.strip().splitlines() if not line.startswith("Using workflow specific profile")]
    assert done.returncode != 0 and len(lines) == 1, done.stdout[-3000:]
    assert lines[0] == "error: results is not writable by this user: make it writable or run the study from a folder that is"
    assert checked.returncode == 2 and checked.stderr.strip() == lines[0], checked.stderr  # check says the same
    assert sorted(p.name for p in results.iterdir()) == ["kept.txt"] and (results / "kept.txt").read_text() == "from an earlier run\n"
    assert not (tmp_path / "reports").exists() and not (tmp_path / "logs").exists()


def test_check_writable_names_a_folder_that_is_not_made_yet_by_the_folder_it_goes_in(tmp_path, monkeypatch):
    from ablation_lab.checks import check_writable

    monkeypatch.chdir(tmp_path)
    check_writable(["results", "reports/x"])  # nothing made yet, the folder is writable: fine
    assert not (tmp_path / "results").exists()
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))
    with pytest.raises(OSError, match=rf"^reports/x \(not made yet; the folder it goes in, {tmp_path}\) is not writable by this user"):
        check_writable(["reports/x"])
