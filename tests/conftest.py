"""Shared fixtures: the repository root and small, valid study configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> tuple[Path, dict]:
    """One complete run of config/test.yaml, shared by every test that reads its outputs (they never change them)."""
    from workflow_helpers import snakemake, write_config

    workdir = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    snakemake(workdir, write_config(workdir, config), "--cores", "2")
    return workdir, config


@pytest.fixture
def test_config() -> dict:
    with open(ROOT / "config" / "test.yaml") as handle:
        return yaml.safe_load(handle)


def deep_set(config: dict, dotted: str, value) -> dict:
    """A copy of config with `a.b.c` set to value (creating mappings on the way)."""
    out = copy.deepcopy(config)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def quick_training(**changes) -> dict:
    """Training settings for the small models unit tests train: 3 fast epochs of Adam at 0.02."""
    settings = {"optimizer": "adam", "learning_rate": 0.02, "epochs": 3, "batch_size": 32, "early_stopping_patience": 0, "loop": "fast"}
    return settings | changes
