"""What a report section is made of, and the formatting every section shares.

A section is a function from the report's named inputs (`ReportInputs`) to the content of
zero or more `<section>` blocks (`SectionContent`). The page engine (`report/page.py`) and
each analysis module (`analyses/<name>.py`) build sections from these; this module imports
neither, so an analysis can own its section without an import cycle.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class ReportInputs:
    """Everything a section may draw from, by name (tables are pandas frames)."""

    study: dict[str, Any]
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sharing: dict[str, list[str]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # where the report was made: commit, host, platform
    model_source: dict[str, str] | None = None  # a model file or builder: its path and content digest


@dataclass
class SectionContent:
    id: str
    title: str
    blocks: list[dict[str, str]] = field(default_factory=list)  # paragraphs and tables, in reading order
    figures: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, str] | None = None

    def say(self, text: str, css: str = "") -> SectionContent:
        """A paragraph (escaped by Jinja)."""
        self.blocks.append({"kind": "text", "text": text, "css": css})
        return self

    def add_table(self, html: str) -> SectionContent:
        """A table made by pandas with escape=True (see `html_table`)."""
        self.blocks.append({"kind": "table", "html": html})
        return self

    def add_figure(self, path: str | Path, alt: str) -> SectionContent:
        """A figure at this point of the reading order (the `figures` list comes before every block)."""
        self.blocks.append({"kind": "figure", "data": png(path), "alt": alt})
        return self


def png(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def interval(low: float, high: float, spec: str = "{:+.4f}") -> str:
    return "n/a" if pd.isna(low) else f"[{spec.format(low)}, {spec.format(high)}]"


def html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0)


def fmt(value: float, spec: str = "{:+.4f}") -> str:
    return "" if pd.isna(value) else spec.format(value)
