"""Atomic artifact writes."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from ablation_lab.artifacts import STALE_SECONDS, _host_tag, atomic_path, write_json


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_rewrite_removes_temporaries_a_killed_writer_left(tmp_path):
    target = tmp_path / "metrics.json"
    (tmp_path / f".metrics.json.{dead_pid()}-{_host_tag()}.abc123.json").write_text("half a fil")
    (tmp_path / ".other.json.x.json").write_text("not ours")
    write_json(target, {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.json", "metrics.json"]


def test_a_temporary_a_live_process_writes_is_never_removed(tmp_path):
    """Cleanup removes a temporary only when its writer is gone: never one a live process
    (here: a sleeping child, as an orphaned job overlapping a rerun would be) is writing."""
    target = tmp_path / "model.keras"
    with subprocess.Popen(["sleep", "30"]) as live:
        try:
            writing = tmp_path / f".model.keras.{live.pid}-{_host_tag()}.k3y9x2ab.keras"
            left = tmp_path / f".model.keras.{dead_pid()}-{_host_tag()}.q8w7e6rt.keras"
            other_host = tmp_path / f".model.keras.{dead_pid()}-{_host_tag('elsewhere')}.z1x2c3vb.keras"
            for path in (writing, left, other_host):
                path.write_text("being written")
            with atomic_path(target) as tmp:
                assert tmp.name.startswith(f".model.keras.{os.getpid()}-{_host_tag()}."), "its name names its writer"
                tmp.write_text("new")
            assert writing.exists(), "a live writer's temporary survives"
            assert other_host.exists(), "another machine's writer cannot be checked from here: kept for a day"
            assert not left.exists(), "a dead writer's temporary is removed"
            assert target.read_text() == "new"
        finally:
            live.kill()
    day_old = time.time() - STALE_SECONDS - 60
    os.utime(other_host, (day_old, day_old))
    write_json(target, {})
    assert not other_host.exists(), "a day-old temporary is stale whoever wrote it"
    assert not writing.exists(), "its writer has exited now"


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "model.keras"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_artifacts_get_the_usual_file_mode(tmp_path):
    import os

    write_json(tmp_path / "a.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_aggregation_refuses_a_history_that_differs_from_its_recorded_digest(tmp_path):
    """The study's history table joins every run's history.csv: each is checked against the
    digest its training job recorded, and a corrupted one is named with what to do."""
    import pandas as pd
    from ablation_lab.artifacts import ArtifactError, file_digest
    from ablation_lab.runtime.jobs import collect_histories

    rows = []
    for seed in (1, 2):
        run_dir = tmp_path / "results" / "digits-abc" / "baseline-0123" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        history = run_dir / "history.csv"
        pd.DataFrame({"epoch": [1, 2], "loss": [0.9, 0.5]}).to_csv(history, index=False)
        write_json(run_dir / "provenance.json", {"digests": {"history": file_digest(history)}})
        rows.append({"family": "baseline", "variant": "reference", "seed": seed, "run": "baseline-0123", "path": str(history)})
    assert len(collect_histories(rows)) == 4

    corrupted = rows[1]["path"]
    with open(corrupted, "a") as handle:
        handle.write("3,0.1\n")  # still a valid CSV: only the digest tells
    with pytest.raises(ArtifactError) as refused:
        collect_histories(rows)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{corrupted} is corrupted or truncated")
    assert "delete its run folder" in message and "--forcerun train" in message
