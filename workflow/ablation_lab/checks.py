"""The cross-field checks a study needs beyond its schema, each a one-line error naming the key.

The schema (config.py) checks each key alone; these read several together, or a file the
study names: a model file that cannot serve the study's data or families, a builder that does
not exist, post-hoc layers the model does not have, a family list naming no family of the
study. `design.expand_families` calls them while it expands the variants (`Study.from_config`
does that eagerly), before any job runs. What one analysis asks of its own block is its
module's hook (`Analysis.check`, ...), built from the helpers here that take the key to name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ablation_lab.config import ConfigError, load_schema, model_kind
from ablation_lab.data.base import DatasetInfo


def check_model_source(config: Mapping[str, Any], info: DatasetInfo) -> str | None:
    """A model file that cannot serve this study, or a builder that does not exist, fails here.

    Returns where a model file branches (None for a chain, or no file): what each analysis
    cannot do on such a model is its own to refuse (design.refuse_branching), right after this.
    """
    model = config["model"]
    if model.get("kind") == "file":
        return check_model_file(config, info)
    if model.get("kind") == "builder":
        from ablation_lab.models.builders import builder_file

        try:
            builder_file(model["builder"])
        except ValueError as error:
            raise ConfigError(f"invalid study config: {error}") from None
    return None


def refuse_chain_only(keys: Sequence[str], why: str) -> None:
    """A branching model (`why` says where it branches) asked for keys that cut the model as a chain
    (each analysis's `chain_only`): one line naming the first. Post-hoc knockout and weight faults
    serve any graph (models/graph.py), self-repair the built-in resnet."""
    if keys:
        raise ConfigError(
            f"invalid study config: {keys[0]}: needs a chain model (each layer takes the previous layer's output); "
            f"{why}; remove it for this model (post-hoc knockout and weight faults serve any branching model, self-repair the built-in resnet)"
        )


def check_model_file(config: Mapping[str, Any], info: DatasetInfo) -> str | None:
    """The model file fits the data and has the layers the families change; returns where it branches, if it does."""
    from ablation_lab.models import model_file

    model_cfg = config["model"]
    try:
        found = model_file.inspect_model_file(model_cfg["path"])
        model_file.check_fits_data(found, info.input_shape, info.n_classes)
        model_file.check_dropout_after(found, model_cfg.get("dropout_after") or [])
        for family in config["families"]:
            model_file.check_family(found, family, model_cfg)
    except model_file.ModelFileError as error:
        raise ConfigError(f"invalid study config: {error}") from None
    branch = found.chain_break()
    return f"in {model_cfg['path']!r} {branch}" if branch else None


def knockout_layers(model: Mapping[str, Any]) -> list[str] | None:
    """The layers post-hoc knockout can remove units of, when known before any model is built."""
    if model_kind(model) in ("mlp", "kst", "cnn", "resnet"):
        from ablation_lab.models.surgery import built_in_layers

        return built_in_layers(dict(model))
    if model.get("kind") == "file":
        from ablation_lab.models.model_file import inspect_model_file

        return inspect_model_file(model["path"]).knockout_layers()
    return None  # a builder's layers are known once it has built the model: the knockout job checks


def check_posthoc_layers(posthoc: Mapping[str, Any], model: Mapping[str, Any], where: str = "posthoc.layers") -> None:
    """`posthoc.layers` (or the key `where` names: an analysis's layer list, or one layer as a one-item list)
    names layers this model has (a model file's by name)."""
    units = model.get("hidden_units", [])
    available = knockout_layers(model)
    if model.get("kind") == "resnet":  # the chain-only keys were refused first (design.check_analyses)
        from ablation_lab.models.surgery import block_writes

        units, posthoc = [], {**posthoc, "layers": block_writes(posthoc["layers"])}
    if model.get("kind") in ("file", "resnet"):
        numbered = [index for index, layer in enumerate(posthoc["layers"]) if not isinstance(layer, str)]
        if numbered:
            raise ConfigError(
                f"invalid study config: {_at(where, numbered[0])}: a {'model file' if model.get('kind') == 'file' else 'residual network'}'s layers are named, not numbered "
                f"(its knock-out-able layers: {', '.join(available or [])})"
            )
    for index, layer in enumerate(posthoc["layers"]):
        if not isinstance(layer, str) and layer > len(units):
            raise ConfigError(f"invalid study config: {_at(where, index)}: layer {layer}, but the model has {len(units)} hidden layers")
        if isinstance(layer, str) and available is not None and layer not in available:
            raise ConfigError(
                f"invalid study config: {_at(where, index)}: {layer!r} is not a knock-out-able layer of this model "
                f"(available: {', '.join(available)})"
            )


def compensation_off_reason(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why this study's compensation gap cannot be measured (a message naming the key, and the
    words that tell an explicit `true` how to turn it off), or None.

    These live here, not in `analyses/compensation.py`, because they are plan-time checks of
    the config like every other one of this module: they read several keys together (the
    post-hoc block against `model.kind`). The analysis module computes the gap from the
    study's tables; it only lends its reading of `posthoc.layers` (which layer the `units`
    family narrows), so the check and the analysis cannot disagree about it.
    """
    from ablation_lab.ablations import BASELINE
    from ablation_lab.analyses.compensation import compensation_layer, compensation_layer_name

    posthoc, kind = config["posthoc"], model_kind(config["model"])
    if kind == "file":
        return "posthoc.compensation: needs width-reduced retrains, which model.kind: file cannot build", "; leave posthoc.compensation out (knockout itself runs)"  # fmt: skip
    if kind == "resnet" and not compensation_layer_name(posthoc["layers"]).startswith("block_"):
        return (
            "posthoc.layers: the compensation gap of a residual network narrows a block's inner "
            "width and knocks its channels out; name one (e.g. block_2_relu_2)",
            " or leave posthoc.compensation out",
        )
    if compensation_layer(posthoc["layers"]) is None:
        return (
            "posthoc.layers: the compensation gap narrows a hidden layer and knocks units out "
            "of it, but posthoc.layers names none; add one (e.g. 1 or hidden_1)",
            " or leave posthoc.compensation out",
        )
    if BASELINE not in posthoc["families"]:
        return (
            "posthoc.families: the compensation gap knocks units out of the baseline; add 'baseline'",
            " (or leave posthoc.compensation out)",
        )
    return None


def resolve_compensation(config: dict[str, Any]) -> None:
    """`posthoc.compensation: null` (the default) becomes whether the gap applies to this study.

    Done once, on the validated config, before anything reads it (the design, the analyses'
    parameters), so every reader sees one boolean. Left out, the gap is measured where it can
    be and skipped (with `check` saying why) where it cannot: a model file, a post-hoc block
    naming no narrowable layer. Set to true, it is required and refused with the reason.
    """
    posthoc = config.get("posthoc")
    if posthoc and posthoc["compensation"] is None:
        posthoc["compensation"] = compensation_off_reason(config) is None


def check_compensation(config: Mapping[str, Any]) -> None:
    """`posthoc.layers` against the model and, with `posthoc.compensation`, what the gap needs of them."""
    posthoc = config["posthoc"]
    check_posthoc_layers(posthoc, config["model"])
    reason = compensation_off_reason(config) if posthoc["compensation"] else None
    if reason:
        raise ConfigError(f"invalid study config: {''.join(reason)}")


def _at(where: str, index: int) -> str:
    """`posthoc.layers[1]`, or just the key for a key naming one layer (not ending in `s`)."""
    return f"{where}[{index}]" if where.endswith("s") else where


def weight_layers(model: Mapping[str, Any]) -> list[str] | None:
    """The Dense/Conv kernels fault injection can target, when known before any model is built."""
    if model.get("kind") == "file":
        from ablation_lab.models.model_file import inspect_model_file

        kernels = ("Dense", "Conv1D", "Conv2D", "Conv3D")
        return [layer.name for layer in inspect_model_file(model["path"]).layers if layer.kind in kernels]
    from ablation_lab.models.surgery import built_in_weight_layers

    return built_in_weight_layers(dict(model))  # None for a builder's or KST's: the faults job checks


def check_weight_layers(wanted: Sequence[str], model: Mapping[str, Any], where: str) -> None:
    """`where` (a list key, e.g. `faults.layers`) names Dense/Conv layers this model has (a typo would fail every analysis job)."""
    available = weight_layers(model)
    for index, name in enumerate(wanted):
        if available is not None and name not in available:
            raise ConfigError(
                f"invalid study config: {where}[{index}]: {name!r} is not a Dense/Conv layer of this model "
                f"(available: {', '.join(available)})"
            )


def blocks_with_families() -> list[str]:
    """The top-level config blocks that name the families they analyse (`<block>.families`)."""
    blocks = load_schema()["properties"].items()
    return [name for name, rule in blocks if "families" in (rule.get("properties") or {})]


def check_named_families(config: Mapping[str, Any], known: Sequence[str]) -> None:
    """Each analysis block's `families` (every block of the schema with that key) names families of this study
    (a typo would analyse nothing)."""
    for block in blocks_with_families():
        for index, family in enumerate((config.get(block) or {}).get("families") or []):
            if family not in known:
                raise ConfigError(
                    f"invalid study config: {block}.families[{index}]: {family!r} is not a family of this study (known: {', '.join(known)})"
                )


def check_variant_count(config: Mapping[str, Any], where: str, count: int) -> None:
    """Stop a study that would expand past `limits.max_variants`, naming the block that did it."""
    limit = config["limits"]["max_variants"]
    if count > limit:
        raise ConfigError(
            f"invalid study config: {where}: brings the study to {count:,} variants, more than limits.max_variants ({limit:,}); "
            "narrow the family, or raise the limit on purpose"
        )


def check_job_count(config: Mapping[str, Any], count: int) -> None:
    """Stop a study that would plan more than `limits.max_jobs` jobs before Snakemake builds its DAG."""
    limit = config["limits"]["max_jobs"]
    if count > limit:
        raise ConfigError(
            f"invalid study config: seeds: the study plans {count:,} jobs (trained models x seeds plus analyses), "
            f"more than limits.max_jobs ({limit:,}); use fewer seeds or variants, or raise the limit on purpose"
        )


def check_writable(folders: Sequence[str]) -> None:
    """The output folders (or, not made yet, the nearest folder above each) can be written: a read-only results
    folder is this one line at plan time, not a PermissionError in the first job."""
    import os

    for folder in folders:
        where = os.path.abspath(folder)
        while not os.path.exists(where):
            where = os.path.dirname(where)
        if not os.access(where, os.W_OK | os.X_OK):
            shown = folder if where == os.path.abspath(folder) else f"{folder} (not made yet; the folder it goes in, {where})"
            raise OSError(f"{shown} is not writable by this user: make it writable or run the study from a folder that is")
