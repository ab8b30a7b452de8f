"""A study's design: the validated config expanded into its families of variants.

What a study compares is decided here, once: the baseline, each declared family's variants,
the crossed combinations, and (with `posthoc.compensation`) the retrained and post-hoc twins
the compensation gap pairs. `Study` keeps the result and names runs, probes and paths from
it; nothing else expands a config. The cross-field checks that need the expansion (how many
variants, which families exist) run between its steps, so a bad study is one ConfigError
line before any expensive work; the generic checks live in `checks.py`, each analysis's own
in its module (`Analysis.chain_only`, `branching`, `check`, `check_sizes`), which the loops
here call for the analyses the study asks for (`registry.asked`): checks.py cannot import the
registry, whose analyses import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ablation_lab import checks
from ablation_lab.ablations import (
    BASELINE,
    FAMILIES,
    POSTHOC_SUFFIX,
    UNITS,
    Variant,
    baseline_variant,
    combination_name,
    combine,
    expand_units,
    test_time_counterpart,
)
from ablation_lab.analyses import registry
from ablation_lab.config import ConfigError, model_kind
from ablation_lab.data.base import DatasetInfo

UNKNOWN_DATA = DatasetInfo("unknown", ())  # what a family sees when neither it nor the model needs the data


def needs_data(config: Mapping[str, Any]) -> bool:
    """Whether the design reads the dataset's kind and shape: input ablation and image or file models do."""
    return "input" in config["families"] or model_kind(config["model"]) in ("cnn", "resnet", "file")


def expand_families(config: Mapping[str, Any], read_info: Callable[[], DatasetInfo]) -> dict[str, list[Variant]]:
    """Family name -> its variants, in declaration order: the baseline first, then each declared
    family, the combinations, and the compensation gap's families.

    `read_info` is called only where `needs_data`: any other study never describes its data
    here, and its families see `UNKNOWN_DATA`, as they always have (their variants, hence
    their run names, do not depend on it).
    """
    info = read_info() if needs_data(config) else UNKNOWN_DATA
    branch = checks.check_model_source(config, info)
    if branch:
        refuse_branching(config, branch)
    out = _declared_families(config, info)
    _check_image_model(config, info)
    out |= _combinations(config, out)
    out |= compensation_families(config, out)
    checks.check_named_families(config, list(out))
    check_analyses(config)
    return out


def refuse_branching(config: Mapping[str, Any], why: str) -> None:
    """A model that branches (`why` says where) asked for what needs a chain: one line naming the key.

    Every asked analysis's chain-only keys together first (the first of them named), then what
    each refuses on its own (`Analysis.branching`), so the message does not depend on which
    analysis's hook ran first.
    """
    analyses = registry.asked(config)
    checks.refuse_chain_only([key for analysis in analyses if analysis.chain_only for key in analysis.chain_only(config)], why)
    for analysis in analyses:
        if analysis.branching:
            analysis.branching(config, why)


def check_analyses(config: Mapping[str, Any]) -> None:
    """Each asked analysis's plan-time check (`Analysis.check`: the layers its block names are ones this
    model has), after a residual network's chain-only refusal: one step at plan time, so a typo is
    one line and not an error in every analysis job."""
    if config["model"].get("kind") == "resnet":
        refuse_branching(config, "model.kind resnet branches")
    for analysis in registry.asked(config):
        if analysis.check:
            analysis.check(config)


def _declared_families(config: Mapping[str, Any], info: DatasetInfo) -> dict[str, list[Variant]]:
    """The baseline and each family of `families:`, stopped at the block that passes `limits.max_variants`."""
    out: dict[str, list[Variant]] = {BASELINE: [baseline_variant()]}
    for name, params in config["families"].items():
        try:
            out[name] = FAMILIES[name].expand(params, info, config["model"])
        except ValueError as error:
            raise ConfigError(f"invalid study config: {error}") from None
        checks.check_variant_count(config, f"families.{name}", sum(map(len, out.values())))
    return out


def _check_image_model(config: Mapping[str, Any], info: DatasetInfo) -> None:
    """A convolutional model on data that is not images fails here (after the families, as it always has)."""
    kind = model_kind(config["model"])
    if kind in ("cnn", "resnet") and info.kind != "image":
        raise ConfigError(
            f"invalid study config: model.kind: {kind} needs image data; dataset {config['dataset']['name']!r} is {info.kind}"
        )


def _combinations(config: Mapping[str, Any], declared: dict[str, list[Variant]]) -> dict[str, list[Variant]]:
    """Each pair of `combinations:` crossed, every cell a variant; counted against `limits.max_variants`."""
    out: dict[str, list[Variant]] = {}
    for index, (first, second) in enumerate(config["combinations"]):
        cells = {**declared, **out}
        crossed = len(cells[first]) * len(cells[second])
        checks.check_variant_count(config, f"combinations[{index}]", sum(map(len, cells.values())) + crossed)
        out[combination_name(first, second)] = combine(cells[first], cells[second])
    return out


def compensation_families(config: Mapping[str, Any], declared: Mapping[str, list[Variant]]) -> dict[str, list[Variant]]:
    """With `posthoc.compensation`: the width-reduced retrains (`units`) and the test-time
    counterparts of the input and noise families (`input_posthoc`, `noise_posthoc`)."""
    posthoc = config.get("posthoc")
    if not posthoc:
        return {}
    checks.check_compensation(config)
    if not posthoc["compensation"]:
        return {}
    from ablation_lab.analyses.compensation import compensation_layer

    narrowed = compensation_layer(posthoc["layers"])  # a hidden layer: check_compensation refused a list naming none
    out: dict[str, list[Variant]] = {}
    try:
        out[UNITS] = expand_units(posthoc["fractions"], config["model"], narrowed)
    except ValueError as error:
        raise ConfigError(f"invalid study config: {error}") from None
    for family in ("input", "noise"):
        counterparts = [c for v in declared.get(family, []) if (c := test_time_counterpart(v)) is not None]
        if counterparts:
            out[family + POSTHOC_SUFFIX] = counterparts
    return out


def check_split_sizes(config: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    """Each asked analysis's `check_sizes`, against the split's sizes (`sizes`: train/val/test counts, from
    the prepared split or from reading the data at plan time): refused once, while the workflow is
    planned, not by every job that would draw the examples."""
    for analysis in registry.asked(config):
        if analysis.check_sizes:
            analysis.check_sizes(config, sizes)


def variants_by_id(families: Mapping[str, list[Variant]]) -> dict[str, Variant]:
    """Variant id -> variant, in family order; two variants with one id are refused (they would share every file)."""
    by_id: dict[str, Variant] = {}
    for family, variants in families.items():
        for variant in variants:
            if variant.id in by_id:
                raise ConfigError(
                    f"invalid study config: duplicate variant id {variant.id!r} in family {family!r}; each variant must differ"
                )
            by_id[variant.id] = variant
    return by_id
