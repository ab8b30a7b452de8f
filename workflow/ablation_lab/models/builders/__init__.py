"""Model builders: Python code for a model that cannot be a `.keras` file (`model.kind: builder`).

A builder is a file in this folder, `<name>.py`, defining

    def build(input_shape: tuple[int, ...], n_classes: int, model: dict) -> keras.Model

and a study names it with `model: {kind: builder, builder: <name>}`. The file's name is its
registration: a study can only ever run code that sits in this folder of the repository,
never an import path read from a config. `model` is the resolved model config of the
variant (hidden_units, activation, dropout, ... as the families set them), so a builder
that reads those keys gets every family for free. The file's content digest is part of
each run's identity: editing a builder retrains the runs built by it. Builders are
imported by the training job only; the Snakefile never runs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUILDERS_DIR = Path(__file__).parent


def available() -> list[str]:
    """The builder names this repository holds (one per `<name>.py` file here)."""
    return sorted(p.stem for p in BUILDERS_DIR.glob("*.py") if not p.stem.startswith("_"))


def builder_file(name: str) -> Path:
    """The file of a builder; an unknown name is one line listing the known ones."""
    if name not in available():
        raise ValueError(
            f"model.builder: {name!r} is not a builder of this repository (known: {', '.join(available()) or 'none'}); "
            f"add {BUILDERS_DIR / (name + '.py')} defining build(input_shape, n_classes, model)"
        )
    return BUILDERS_DIR / f"{name}.py"


def load_builder(name: str) -> Callable[..., Any]:
    builder_file(name)  # refuses anything but a file of this folder
    module = importlib.import_module(f"{__name__}.{name}")
    build = getattr(module, "build", None)
    if not callable(build):
        raise ValueError(f"model.builder: {BUILDERS_DIR / (name + '.py')} defines no build(input_shape, n_classes, model) function")
    return build
