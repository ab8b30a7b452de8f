"""docs/glossary.md keeps one word for one idea: every config key and every family a study can
produce has a row there, so a new block or family cannot land without its definition."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from ablation_lab.ablations import BASELINE, DERIVED, FAMILIES

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def defined_words() -> set[str]:
    """The back-quoted words of the glossary's first column (a row may define several)."""
    words = set()
    for line in GLOSSARY.read_text().splitlines():
        cells = line.split("|")
        if len(cells) > 2:
            words |= set(re.findall(r"`([^`]+)`", cells[1]))
    return words


def test_every_top_level_config_key_is_defined() -> None:
    keys = set(yaml.safe_load(SCHEMA.read_text())["properties"])
    missing = sorted(keys - defined_words())
    assert not missing, f"docs/glossary.md has no row for the config keys {missing}"


def test_every_family_a_study_can_produce_is_defined() -> None:
    families = {*FAMILIES, *DERIVED, BASELINE}
    words = defined_words() | set(re.findall(r"`([^`]+)`", GLOSSARY.read_text()))
    missing = sorted(families - words)
    assert not missing, f"docs/glossary.md does not name the families {missing}"


def test_a_word_is_defined_once() -> None:
    rows = [re.findall(r"`([^`]+)`", line.split("|")[1]) for line in GLOSSARY.read_text().splitlines() if line.count("|") > 2]
    first_column = [word for row in rows for word in row]
    repeated = sorted({word for word in first_column if first_column.count(word) > 1})
    assert not repeated, f"docs/glossary.md defines {repeated} twice: one word, one idea"


def test_every_analysis_is_defined() -> None:
    from ablation_lab.analyses.registry import ANALYSES

    missing = sorted(set(ANALYSES) - defined_words())
    assert not missing, f"docs/glossary.md has no row for the analyses {missing}"
