"""Run, data and probe names of the shipped studies, pinned: a refactor never renames a cache.

A trained model's directory is named by what determines it (identity.run_name); if moving
code around changes one of these names, every user's cache would silently retrain. A change
to what a model *is* bumps TRAINING_CODE_VERSION and regenerates this file on purpose:

    python tests/test_pinned_names.py > tests/data/pinned_names.json
"""

from __future__ import annotations

import json
import sys

import pytest
from ablation_lab.config import load_config_file
from ablation_lab.study import Study
from conftest import ROOT

PINNED = ROOT / "tests" / "data" / "pinned_names.json"
STUDIES = ("config/config.yaml", "config/full.yaml", "config/test.yaml")


def names(config_file: str) -> dict[str, object]:
    """What a study's artifacts are called: its data key, run directories and analysis probes."""
    study = Study.from_config(load_config_file(ROOT / config_file))
    probes = sorted(f"{analysis}/{probe}" for analysis in study.analyses() for probe in study.probe_names(analysis))
    return {"data": study.data_key, "runs": sorted(study.runs), "probes": probes}


@pytest.mark.parametrize("config_file", STUDIES)
def test_the_shipped_studies_keep_their_artifact_names(config_file):
    pinned = json.loads(PINNED.read_text())[config_file]
    assert names(config_file) == pinned, f"{config_file}: artifact names changed (see this test's docstring)"


if __name__ == "__main__":
    json.dump({study: names(study) for study in STUDIES}, sys.stdout, indent=1, sort_keys=True)
    print()
