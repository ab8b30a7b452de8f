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


def bright_rows() -> dict:
    """A tiny seeded 3-class image set (8x8) whose class is a bright row: small models learn it in a few epochs."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 160), ("val", 60), ("test", 60)):
        y = rng.integers(0, 3, n).astype(np.int32)
        x = rng.random((n, 8, 8)).astype(np.float32) * 0.3
        x[np.arange(n), y * 2, :] += 1.0
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def quick_training(**changes) -> dict:
    """Training settings for the small models unit tests train: 3 fast epochs of Adam at 0.02."""
    settings = {"optimizer": "adam", "learning_rate": 0.02, "epochs": 3, "batch_size": 32, "early_stopping_patience": 0, "loop": "fast"}
    return settings | changes


class SavedModelContext:
    """What an analysis job hands a per-model `run`: the model loaded from its saved file (lazily),
    the splits' inputs and labels, the run's seed and, where the analysis trains, the study's training block."""

    def __init__(self, path, data, labels, training=None, seed=1):
        self.path, self.data, self.labels_, self.seed = path, data, labels, seed
        self.split = type("Split", (), {"y": staticmethod(lambda split: labels[split])})()
        self.spec = {"training": training}

    @property
    def model(self):
        from ablation_lab.models.build import load_model

        if not hasattr(self, "_model"):
            self._model = load_model(str(self.path))
        return self._model

    def inputs(self, split):
        return self.data[split]

    def labels(self, split):
        return self.labels_[split]
