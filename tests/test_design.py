"""The study design (`design.py`): a config expanded into families, each cross-field check on the way."""

from __future__ import annotations

import pytest
from ablation_lab import design
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.data.base import DatasetInfo
from ablation_lab.study import Study
from conftest import deep_set


def _unread() -> DatasetInfo:
    raise AssertionError("the design read the data, which this study does not need")


def test_the_design_is_what_the_study_keeps(test_config):
    study = Study.from_config(test_config)
    families = design.expand_families(study.config, lambda: study.info)
    assert list(families) == list(study.families) and families == study.families
    assert next(iter(families)) == "baseline"
    assert design.variants_by_id(families) == study.variants


def _dropout_only(config: dict) -> dict:
    """The test study with one family and nothing that names another."""
    kept = {k: v for k, v in config.items() if k in ("study", "seeds", "dataset", "model", "training")}
    return kept | {"families": {"dropout": {"rates": [0.2]}}}


def test_a_study_that_needs_no_data_never_describes_it(test_config):
    config = validate_config(_dropout_only(test_config))
    assert not design.needs_data(config)
    assert list(design.expand_families(config, _unread)) == ["baseline", "dropout"]


def test_the_compensation_gap_without_the_baseline_is_one_line(test_config):
    config = deep_set(_dropout_only(test_config), "posthoc", {"compensation": True, "families": ["dropout"]})
    expected = (
        "posthoc.families: the compensation gap knocks units out of the baseline; add 'baseline' \\(or leave posthoc.compensation out\\)"
    )
    with pytest.raises(ConfigError, match=rf"^invalid study config: {expected}$"):
        Study.from_config(config)


def test_each_analysis_checks_its_own_block_and_the_first_error_is_fixed(test_config):
    """The analyses' plan-time hooks (`Analysis.check`, `Analysis.chain_only`) run from the registry, reliance's
    first (registry.CHECKED_FIRST): a config with several bad blocks gets the first error it always got."""
    bad = {"reliance": {"layers": ["nope"]}, "recovery": {"layer": "nope"}, "faults": {"layers": ["nope"]}}
    config = _dropout_only(test_config) | bad
    firsts = {
        "reliance": r"reliance.layers\[0\]: 'nope' is not a knock-out-able",
        "recovery": "recovery.layer: 'nope' is not",
        "faults": r"faults.layers\[0\]: 'nope' is not a Dense/Conv",
    }
    for block, first in firsts.items():
        with pytest.raises(ConfigError, match=rf"^invalid study config: {first}"):
            Study.from_config(config)
        config.pop(block)
    resnet = {"kind": "resnet", "filters": [4], "blocks": 1, "activation": "relu", "dropout": 0.0}
    branching = deep_set(_dropout_only(test_config) | bad | {"faults": {"clip": True}}, "model", resnet)
    with pytest.raises(ConfigError, match=r"^invalid study config: reliance: needs a chain model .*; model.kind resnet branches"):
        Study.from_config(branching)
