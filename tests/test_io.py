"""Atomic artifact writes."""

from __future__ import annotations

import pytest
from ablation_lab.io import atomic_path, write_json


def test_a_rewrite_removes_temporaries_a_killed_writer_left(tmp_path):
    target = tmp_path / "metrics.json"
    (tmp_path / ".metrics.json.abc123.json").write_text("half a fil")
    (tmp_path / ".other.json.x.json").write_text("not ours")
    write_json(target, {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.json", "metrics.json"]


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
