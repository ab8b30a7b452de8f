"""What a model spec means before any model is built: the learnable activations and the
settings they are built with, and the per-kind defaults (read from the schema). Pure Python (no TensorFlow): run
identity, model files and the built-in models all read it, so none of them imports another
to learn it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

# Learnable activations (ablation_lab/models/layers.py) and the settings they are built with: a run's
# spec holds the settings in full when its activation is learnable, and not at all otherwise.
LEARNABLE_ACTIVATIONS = ("gp", "gp-per-unit", "slaf-poly2", "slaf-poly3", "slaf-poly4", "slaf-standard")


@cache
def kind_defaults(kind: str) -> dict[str, Any]:
    """The defaults of the model keys that mean something for `kind` only (the schema's `x-kind-defaults`)."""
    from ablation_lab.config import load_schema

    properties = load_schema()["properties"]["model"]["properties"]
    return {key: rule["x-kind-defaults"][kind] for key, rule in properties.items() if kind in rule.get("x-kind-defaults", {})}


@cache
def learnable_defaults() -> dict[str, Any]:
    """`model.learnable`'s defaults, from the schema."""
    from ablation_lab.config import load_schema

    properties = load_schema()["properties"]["model"]["properties"]["learnable"]["properties"]
    return {key: rule["default"] for key, rule in properties.items()}


def learnable_settings(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`model.learnable` over its defaults; a bad grid or length scale named by key."""
    settings = {**learnable_defaults(), **(model_cfg.get("learnable") or {})}
    low, high = settings["grid_range"]
    if not low < high:
        raise ValueError(f"model.learnable.grid_range: {settings['grid_range']} must be [low, high] with low < high")
    return settings


def resnet_widths(model_cfg: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """Kind resnet: each block's stream width (`filters`, its last entry repeated up to `blocks`)
    and each block's inner width (`block_widths`, the channels of its first conv; default: its
    stream width). A bad length is an error naming the key."""
    blocks, filters = int(model_cfg["blocks"]), [int(f) for f in model_cfg["filters"]]
    if len(filters) > blocks:
        raise ValueError(f"model.filters: {len(filters)} entries for {blocks} residual blocks (give at most one per block, model.blocks)")
    filters += [filters[-1]] * (blocks - len(filters))
    inner = [int(w) for w in model_cfg.get("block_widths") or filters]
    if len(inner) != blocks:
        raise ValueError(f"model.block_widths: {len(inner)} entries for {blocks} residual blocks (give one per block)")
    return filters, inner
