"""Ablation families: each maps its config block to named variants, and variants to transforms.

A family is one `expand_*` function registered in FAMILIES. A variant is a readable, stable
id (`noise/gauss-0.3`) plus what it changes: model overrides (dropout, activation, width)
and data transforms (masking, noise, dropped features). Transforms are pure NumPy functions
of the prepared split and a seed, applied in memory by the training job.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablation_lab.data.base import DatasetInfo
from ablation_lab.messages import listing

BASELINE = "baseline"


@dataclass(frozen=True)
class Variant:
    """One trained configuration; `family/name` is its id and its directory."""

    family: str
    name: str
    label: str
    model: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[dict[str, Any], ...] = ()
    coords: dict[str, Any] = field(default_factory=dict)  # plot coordinates, e.g. {"dropout rate": 0.2}

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


@dataclass(frozen=True)
class Family:
    expand: Callable[..., list[Variant]]  # (params, data info, baseline model config) -> variants
    title: str
    description: str


def _number(value: float) -> str:
    return f"{value:g}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def expand_dropout(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    return [
        Variant("dropout", f"rate-{_number(r)}", f"dropout {_number(r)}", {"dropout": r}, coords={"dropout rate": r})
        for r in params["rates"]
    ]


def expand_activation(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    return [Variant("activation", f, f, {"activation": f}, coords={"activation": f}) for f in params["functions"]]


def _image_regions(kind: str, size: int, shape: Sequence[int]) -> list[tuple[str, str, dict[str, Any]]]:
    height, width = shape[0], shape[1]
    if kind in ("columns", "rows"):
        extent = width if kind == "columns" else height
        short = "cols" if kind == "columns" else "rows"
        out = []
        for start in range(0, extent, size):
            stop = min(start + size, extent)
            region = {"axis": kind, "start": start, "stop": stop, "extent": extent}
            out.append((f"{short}-{start:02d}-{stop - 1:02d}", f"{short} {start}-{stop - 1}", region))
        return out
    out = []
    for row in range(0, height, size):
        for col in range(0, width, size):
            region = {"axis": "patches", "row": row, "col": col, "size": size}
            out.append((f"patch-r{row:02d}-c{col:02d}-s{size:02d}", f"patch r{row} c{col}", region))
    return out


def expand_input(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    fill = params.get("fill", "zero")
    variants = []
    for index, group in enumerate(params["groups"]):
        kind = group["kind"]
        where = f"families.input.groups[{index}]"
        if kind == "features":
            if info.kind != "tabular":
                raise ValueError(f"{where}: kind 'features' needs tabular data; this dataset holds images (use columns, rows or patches)")
            named = group.get("named") or {name: [name] for name in info.feature_names}
            position = {feature: column for column, feature in enumerate(info.feature_names)}  # one lookup per member
            for group_name, members in named.items():
                unknown = [m for m in members if m not in position]
                if unknown:
                    raise ValueError(
                        f"{where}.named.{group_name}: unknown features {listing(unknown, quote=True)} (known: {listing(info.feature_names)})"
                    )
                indices = [position[m] for m in members]
                transform = {"op": "drop_features", "indices": indices}
                variants.append(
                    Variant(
                        "input",
                        f"drop-{_slug(group_name)}",
                        f"without {group_name}",
                        transforms=(transform,),
                        coords={"left out": group_name},
                    )
                )
            continue
        if info.kind != "image":
            raise ValueError(f"{where}: kind {kind!r} needs image data; this dataset is tabular (use kind: features)")
        if "size" not in group:
            raise ValueError(f"{where}: kind {kind!r} needs a size (pixels per group)")
        # A size beyond the image would silently make one group of the whole image.
        height, width = info.input_shape[0], info.input_shape[1]
        sides = {"columns": [("width", width)], "rows": [("height", height)], "patches": [("height", height), ("width", width)]}
        for side, extent in sides[kind]:
            if group["size"] > extent:
                raise ValueError(
                    f"{where}.size: {group['size']} is larger than the image {side} of {extent} pixels ({height} x {width} images)"
                )
        suffix = "" if fill == "zero" else f"-{fill}"
        for name, label, region in _image_regions(kind, group["size"], info.input_shape):
            transform = {"op": "mask", "region": region, "fill": fill}
            variants.append(Variant("input", name + suffix, label, transforms=(transform,), coords={"ablated": label, "region": region}))
    return variants


_NOISE_SHORT = {"gaussian": "gauss", "salt_pepper": "sp"}


def expand_noise(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    variants = []
    for kind, apply_to, level in itertools.product(params["kinds"], params["apply_to"], params["levels"]):
        suffix = "" if apply_to == "both" else "-testonly"
        transform = {"op": "noise", "kind": kind, "level": level, "apply_to": apply_to}
        label = f"{kind} {_number(level)}" + ("" if apply_to == "both" else " (test only)")
        coords = {"noise level": level, "noise": f"{kind}, {'train+test' if apply_to == 'both' else 'test only'}"}
        variants.append(Variant("noise", f"{_NOISE_SHORT[kind]}-{_number(level)}{suffix}", label, transforms=(transform,), coords=coords))
    return variants


def expand_capacity(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    """MLP: `depth` hidden layers of `width` units. CNN: `depth` conv blocks, the first with
    `width` filters, doubling per block (the usual CNN widening); its dense head is kept.
    ResNet: `depth` residual blocks, the first `width` channels wide, the others twice that."""
    if (model or {}).get("kind") == "resnet":
        return [
            Variant(
                "capacity",
                f"w{w}-d{d}",
                f"{d} residual blocks from {w} channels",
                {"blocks": d, "filters": [w, 2 * w][:d], "block_widths": None},
                coords={"width": w, "depth": d},
            )
            for d, w in itertools.product(params["depths"], params["widths"])
        ]
    if (model or {}).get("kind") == "cnn":
        return [
            Variant(
                "capacity",
                f"w{w}-d{d}",
                f"{d} conv blocks from {w} filters",
                {"filters": [w * 2**i for i in range(d)]},
                coords={"width": w, "depth": d},
            )
            for d, w in itertools.product(params["depths"], params["widths"])
        ]
    return [
        Variant("capacity", f"w{w}-d{d}", f"{d} x {w}", {"hidden_units": [w] * d}, coords={"width": w, "depth": d})
        for d, w in itertools.product(params["depths"], params["widths"])
    ]


def expand_nsdropout(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    """No dropout, ordinary dropout and NSDropout at each rate, on the same layers (the write-up's comparison).

    Inference modes are not variants: each NSDropout model is evaluated in every mode by the
    `nsdropout` analysis (ablation_lab/analyses/nsdropout.py).
    """
    where = {"dropout_layers": list(params["layers"])}
    variants = [Variant("nsdropout", "none", "no dropout", {"dropout": 0.0}, coords={"layer": "none", "rate": 0.0})]
    for rate in params["rates"]:
        variants.append(
            Variant(
                "nsdropout",
                f"dropout-{_number(rate)}",
                f"dropout {_number(rate)}",
                {"dropout": rate, **where},
                coords={"layer": "dropout", "rate": rate},
            )
        )
    for rate in params["rates"]:
        model = {"dropout": rate, "dropout_kind": "nsdropout", "nsdropout_interval": params["mask_interval"], **where}
        variants.append(
            Variant(
                "nsdropout", f"nsdropout-{_number(rate)}", f"NSDropout {_number(rate)}", model, coords={"layer": "nsdropout", "rate": rate}
            )
        )
    return variants


def expand_labels(params: dict[str, Any], info: DatasetInfo, model: Mapping[str, Any] | None = None) -> list[Variant]:
    """Training labels corrupted at each rate (Morcos et al., 2018): validation and test labels never are."""
    return [
        Variant(
            "labels",
            f"noise-{_number(r)}",
            f"label noise {_number(r)}",
            transforms=({"op": "corrupt_labels", "rate": r},),
            coords={"label noise": r},
        )
        for r in params["rates"]
    ]


FAMILIES: dict[str, Family] = {
    "dropout": Family(
        expand_dropout, "Neuronal ablation (dropout)", "Hidden units dropped at random during training, at increasing rates."
    ),
    "activation": Family(
        expand_activation, "Functional ablation (activation)", "The hidden non-linearity replaced; 'linear' removes it entirely."
    ),
    "input": Family(
        expand_input,
        "Input feature ablation",
        "Groups of input features removed (images: filled) in train and test, and the model retrained.",
    ),
    "noise": Family(expand_noise, "Noise ablation", "Noise added to the inputs, clipped to the data range, seeded."),
    "capacity": Family(expand_capacity, "Capacity ablation", "Hidden width and depth swept."),
    "nsdropout": Family(
        expand_nsdropout,
        "NSDropout (class-conditional dropout)",
        "No dropout, ordinary dropout and NSDropout at the same rates on the same layers; this family's tables show each model as saved (NSDropout: no mask at inference).",
    ),
    "labels": Family(
        expand_labels,
        "Label noise (corrupted training labels)",
        "A share of the training labels changed, uniformly, to another class (seeded); validation and test labels untouched.",
    ),
}


def combination_name(first: str, second: str) -> str:
    return f"{first}-x-{second}"


def combine(first: list[Variant], second: list[Variant]) -> list[Variant]:
    """The cartesian product of two families: model overrides merged, transforms chained.

    Coordinates name each factor by its family (`{"noise": "gaussian 0.3", "dropout":
    "dropout 0.2"}`): the report draws the grid as a heatmap with one axis per family.
    """
    family = combination_name(first[0].family, second[0].family)
    return [
        Variant(
            family,
            f"{a.name}__{b.name}",
            f"{a.label} + {b.label}",
            {**a.model, **b.model},
            a.transforms + b.transforms,
            {a.family: a.label, b.family: b.label},
        )
        for a, b in itertools.product(first, second)
    ]


def baseline_variant() -> Variant:
    return Variant(BASELINE, "reference", "baseline", coords={"variant": "baseline"})


# --- families derived from the `posthoc` block: the retrain side and the test-time side of
# --- the compensation gap ----------------------------------------------------------------

UNITS = "units"
POSTHOC_SUFFIX = "_posthoc"
DERIVED: dict[str, tuple[str, str]] = {
    UNITS: ("Unit ablation, retrained", "The network retrained with a fraction of its hidden units fewer (width x (1 - f))."),
    "input" + POSTHOC_SUFFIX: (
        "Input feature ablation, post-hoc",
        "The baseline model, trained on every feature, with each input group removed at test time only (images: filled; tables: the training mean).",
    ),
    "noise" + POSTHOC_SUFFIX: (
        "Noise ablation, post-hoc",
        "The baseline model, trained clean, with the same noise added to the test inputs only.",
    ),
}


def expand_units(fractions: Sequence[float], model: Mapping[str, Any], layer: int) -> list[Variant]:
    """Retrain variants matching post-hoc knockout: layer `layer` (1-based) made (1 - f) as wide.

    The MLP's and CNN's layer is `hidden_<layer>`; a residual network's is block `layer`'s inner
    width (`block_widths`, the channels of `block_<layer>_conv_1`), whose post-hoc twin is
    knockout of the same channels at `block_<layer>_relu_2`, the activation they feed forward."""
    resnet = model.get("kind") == "resnet"
    if resnet:
        from ablation_lab.models.settings import kind_defaults, resnet_widths

        _, widths = resnet_widths({**kind_defaults("resnet"), **model})
        if not 1 <= layer <= len(widths):
            raise ValueError(f"posthoc.layers: block {layer}, but the residual network has {len(widths)} blocks")
    else:
        widths = model.get("hidden_units", [])
    out = []
    for fraction in [f for f in fractions if f < 1]:  # a layer with no units has no retrained twin
        units = list(widths)
        units[layer - 1] = max(1, round((1 - fraction) * units[layer - 1]))
        label = f"{_number(100 * fraction)}% fewer {'channels' if resnet else 'units'}"
        change = {"block_widths": units} if resnet else {"hidden_units": units}
        out.append(Variant(UNITS, f"frac-{_number(fraction)}", label, change, coords={"fraction removed": fraction}))
    return out


def test_time_counterpart(variant: Variant) -> Variant | None:
    """The same ablation applied to the trained baseline at test time only, or None if it has none.

    Retrain-side noise (train+test) maps to test-only noise; an image region masked in
    training maps to the same mask at test time; a dropped table column maps to the column
    filled with its training mean (the model needs every column it was trained on).
    """
    if variant.family not in ("input", "noise") or not variant.transforms:
        return None
    test_time = []
    for transform in variant.transforms:
        if transform.get("apply_to", "both") == "test":
            return None  # already a test-time ablation
        if transform["op"] == "drop_features":
            test_time.append({"op": "fill_features", "indices": list(transform["indices"]), "apply_to": "test"})
        else:
            test_time.append({**transform, "apply_to": "test"})
    return Variant(
        variant.family + POSTHOC_SUFFIX, variant.name, f"{variant.label} (post-hoc)", transforms=tuple(test_time), coords=variant.coords
    )


# --- transforms ---------------------------------------------------------------------------


def region_mask(region: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """Boolean mask over one example's shape: True where the region is ablated."""
    mask = np.zeros(tuple(shape[:2]), dtype=bool)
    if region["axis"] == "columns":
        mask[:, region["start"] : region["stop"]] = True
    elif region["axis"] == "rows":
        mask[region["start"] : region["stop"], :] = True
    else:
        size = region["size"]
        mask[region["row"] : region["row"] + size, region["col"] : region["col"] + size] = True
    if len(shape) == 3:
        mask = np.repeat(mask[:, :, None], shape[2], axis=2)
    return mask


def mask_region(
    x: np.ndarray, region: dict[str, Any], fill: str, rng: np.random.Generator, train_mean: np.ndarray, value_range: tuple[float, float]
) -> np.ndarray:
    """Overwrite one image region: zeros, the training mean of each pixel, or uniform noise."""
    out = x.copy()
    mask = region_mask(region, x.shape[1:])
    if fill == "zero":
        out[:, mask] = 0.0
    elif fill == "mean":
        out[:, mask] = train_mean[mask]
    else:
        out[:, mask] = rng.uniform(value_range[0], value_range[1], size=(len(x), int(mask.sum()))).astype(x.dtype)
    return out


def add_noise(x: np.ndarray, kind: str, level: float, rng: np.random.Generator, value_range: tuple[Any, Any]) -> np.ndarray:
    """Gaussian noise of std `level`, or salt-and-pepper on a `level` share of features; clipped.

    `value_range` is (low, high) as scalars, or per-feature arrays for tabular data.
    """
    low, high = value_range
    if level == 0:
        return x.copy()
    if kind == "gaussian":
        noisy = x + level * rng.standard_normal(x.shape, dtype=np.float32)
        return np.clip(noisy, low, high).astype(x.dtype)
    hit = rng.random(x.shape) < level
    salt = rng.random(x.shape) < 0.5
    out = np.where(hit & salt, high, x)
    return np.where(hit & ~salt, low, out).astype(x.dtype)


def drop_features(x: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    return np.delete(x, list(indices), axis=1)


SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def fill_statistics(x_train: np.ndarray) -> dict[str, Any]:
    """What fills and clipping need, from the training split only: value range and mean image.

    Tabular features (2-D data) keep each feature's own range: noise on a standardised table
    must not push a feature to another feature's extremes. Images share one range (a border
    pixel that is always 0 in training must still be able to receive noise).
    """
    per_feature = x_train.ndim == 2
    low, high = (x_train.min(axis=0), x_train.max(axis=0)) if per_feature else (float(x_train.min()), float(x_train.max()))
    return {"value_range": (low, high), "train_mean": x_train.mean(axis=0)}


def transform_split(x: np.ndarray, split: str, transforms: Sequence[dict[str, Any]], seed: int, stats: dict[str, Any]) -> np.ndarray:
    """One split as the variant sees it; each transform draws from its own seeded stream."""
    for position, transform in enumerate(transforms):
        rng = np.random.default_rng(np.random.SeedSequence([seed, position, SPLIT_STREAM[split]]))
        op = transform["op"]
        if op == LABEL_OP:
            continue  # acts on the training labels (`training_labels`), never on inputs
        if transform.get("apply_to", "both") == "test" and split != "test":
            continue  # a test-time-only ablation: the model was trained without it
        if op == "mask":
            x = mask_region(x, transform["region"], transform["fill"], rng, stats["train_mean"], stats["value_range"])
        elif op == "noise":
            x = add_noise(x, transform["kind"], transform["level"], rng, stats["value_range"])
        elif op == "drop_features":
            x = drop_features(x, transform["indices"])
        elif op == "fill_features":
            x = x.copy()
            x[:, transform["indices"]] = stats["train_mean"][transform["indices"]]
        else:
            raise ValueError(f"unknown transform {op!r}")
    return x


LABEL_OP = "corrupt_labels"


def corrupt_labels(y: np.ndarray, rate: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """round(rate x n) labels, drawn without replacement, each changed uniformly to one of the other classes."""
    out = np.array(y, copy=True)
    chosen = rng.choice(len(y), size=round(rate * len(y)), replace=False)
    shift = rng.integers(1, n_classes, size=len(chosen))  # 1..K-1: never the label's own class
    out[chosen] = (out[chosen] + shift) % n_classes
    return out


def training_labels(y_train: np.ndarray, transforms: Sequence[dict[str, Any]], seed: int, n_classes: int) -> np.ndarray:
    """The labels a variant is trained on: the training split's, with any label corruption applied (seeded)."""
    for position, transform in enumerate(transforms):
        if transform["op"] == LABEL_OP and transform["rate"] > 0:
            rng = np.random.default_rng(np.random.SeedSequence([seed, position, SPLIT_STREAM["train"], 17]))
            y_train = corrupt_labels(y_train, transform["rate"], n_classes, rng)
    return y_train


def apply_transforms(
    arrays: dict[str, np.ndarray], transforms: Sequence[dict[str, Any]], seed: int, n_classes: int | None = None
) -> dict[str, np.ndarray]:
    """The variant's view of the prepared data, every random draw seeded; only the training labels may change.

    Fill statistics (mean image, value range) come from the training split only. Label
    corruption needs `n_classes` (default: the largest label of any split, plus one).
    """
    stats = fill_statistics(arrays["x_train"])
    out = dict(arrays)
    if any(t["op"] == LABEL_OP for t in transforms):
        n_classes = n_classes or int(max(arrays[f"y_{s}"].max() for s in SPLIT_STREAM)) + 1
        out["y_train"] = training_labels(arrays["y_train"], transforms, seed, n_classes)
    for split in SPLIT_STREAM:
        out[f"x_{split}"] = transform_split(arrays[f"x_{split}"], split, transforms, seed, stats)
    return out
