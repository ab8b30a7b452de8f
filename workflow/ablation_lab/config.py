"""Study configuration: YAML reading and JSON-schema validation, with one-line errors and defaults.

`snakemake.utils.validate` reports a failure as a multi-paragraph dump of the schema; a user
who typed `dropuot` wants one line that names the key and what would have been allowed. This
module validates against the same schema file (`workflow/schemas/config.schema.yaml`), so
the Snakefile and the tests share a single source of truth.

JSON schema alone is too lenient for configs read from YAML, so the validator here is
stricter in three ways: `.nan` and `.inf` load as floats and pass every `minimum`/`maximum`
check, so numbers must be finite; `1.0` counts as a JSON-schema integer, so integer keys
(seeds, epochs, widths) refuse Python floats; and a duplicate mapping key, which plain YAML
resolves silently to the last value, is an error.

Nothing in a study file is unbounded: the file is at most MAX_CONFIG_BYTES, its aliases may
expand it to at most MAX_YAML_NODES values (the "billion laughs" file is a few lines of
anchors that expand to 10^9 strings), its nesting goes at most MAX_YAML_DEPTH deep (deeper
than any key of the schema can mean), and an integer YAML 1.1 reads differently from how it
looks (`010` is octal 8, `1:30` is 90) is refused with its line rather than silently changed.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ablation_lab.messages import MAX_QUOTED, brief, listing, non_ascii_characters

# workflow/schemas/config.schema.yaml, where the Snakemake catalog reads it, seen from inside the package
# (a symbolic link there), so an installed wheel carries it too.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

# Kinds of input groups that cut an image into pixel regions, and so need (and allow) a size.
IMAGE_GROUP_KINDS = ("columns", "rows", "patches")

MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_NODES = 200_000  # values after alias expansion; config/full.yaml has about 300
MAX_YAML_DEPTH = 12  # the schema's deepest key (families.input.groups[0].named.<group>[0]) is 6


class ConfigError(ValueError):
    """A study configuration that cannot run; the message names the key at fault."""


@cache
def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


# --- YAML -----------------------------------------------------------------------------------


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names a key twice: YAML would silently keep only the last value."""


class StrictSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate mapping keys (`epochs: 5` ... `epochs: 50`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # complex keys fail in the base class; merged (`<<`) keys may override
            key = self.construct_object(key_node)
            if key in first:
                mark = first[key]
                where = f"line {mark.line + 1}, column {mark.column + 1}"
                raise DuplicateKeyError(None, None, f"duplicate key {key!r} (first given at {where})", key_node.start_mark)
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self) -> yaml.Node | None:
        """The document's node graph, refused if its aliases expand it past the budget."""
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, 1, {})
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value).replace("_", "").lstrip("+-")
        if ":" in text or (len(text) > 1 and text.startswith("0") and text[1:].isdigit()):
            value = super().construct_yaml_int(node)
            raise yaml.constructor.ConstructorError(
                None, None, f"YAML 1.1 reads {node.value} as the number {value}; write {value}, or quote it as text", node.start_mark
            )
        return super().construct_yaml_int(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Give a value YAML parses but Python cannot build (`2024-13-01`, `!!int abc`) its line."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as error:
            value = f"{node.value!r} " if isinstance(node, yaml.ScalarNode) else ""
            problem = f"cannot read {value}as {node.tag.rsplit(':', 1)[-1]}: {error}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


StrictSafeLoader.add_constructor("tag:yaml.org,2002:int", StrictSafeLoader.construct_yaml_int)


IN_PROGRESS = -1


def _expanded_size(node: yaml.Node, depth: int, sizes: dict[int, int]) -> int:
    """Values `node` stands for once every alias is expanded; refuses the budget's excess.

    Memoised per node, so a shared anchor is counted by multiplication, not by walking its
    copies: the check costs the size of the file, not of its expansion.
    """
    if depth > MAX_YAML_DEPTH:
        raise yaml.constructor.ConstructorError(
            None, None, f"nested more than {MAX_YAML_DEPTH} levels deep, deeper than any key of a study config", node.start_mark
        )
    if sizes.get(id(node)) == IN_PROGRESS:
        raise yaml.constructor.ConstructorError(None, None, "an alias refers to the value that contains it", node.start_mark)
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = IN_PROGRESS
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, depth + 1, sizes) for child in children)
    if size > MAX_YAML_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"its aliases expand to more than {MAX_YAML_NODES:,} values (a YAML alias bomb?)", node.start_mark
        )
    sizes[id(node)] = size
    return size


def _yaml_error_line(error: yaml.YAMLError, source: str) -> str:
    """`file, line 3, column 5: what is wrong` from a YAML error of any kind."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{source}: {' '.join(str(error).split())}"
    mark = error.problem_mark
    text = f"{source}, line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    if error.context:
        where = error.context_mark
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None and where.line != mark.line else ""
        text += f" ({error.context}{at})"
    return text


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML strictly; a syntax error or duplicate key is one ConfigError line naming `source`."""
    try:
        return yaml.load(text, Loader=StrictSafeLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot read study config {_yaml_error_line(error, source)}") from None
    except RecursionError:
        raise ConfigError(f"cannot read study config {source}: nested too deeply") from None


def load_study_yaml(path: str | Path) -> dict[str, Any]:
    """The raw (unvalidated) mapping of a study file; an empty file is an empty study.

    An unreadable file raises OSError as usual: it is not a mistake in the config.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            text = handle.read(MAX_CONFIG_BYTES + 1)
            if len(text) > MAX_CONFIG_BYTES:
                raise ConfigError(f"cannot read study config {path}: larger than the limit of {MAX_CONFIG_BYTES:,} characters")
        except UnicodeDecodeError as error:
            raise ConfigError(f"cannot read study config {path}: not UTF-8 text (byte {error.start})") from None
    raw = load_yaml_text(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study config is a mapping of keys, got {type(raw).__name__}")
    return raw


# --- schema validation ----------------------------------------------------------------------


def _type_names(types: str | list[str]) -> list[str]:
    return [types] if isinstance(types, str) else list(types)


def _strict_type(base: Any) -> Any:
    """The `type` keyword, refusing non-finite numbers and floats where an integer is expected."""

    def check(validator, types, instance, schema) -> Iterator[jsonschema.ValidationError]:
        names = _type_names(types)
        numeric = "number" in names or "integer" in names
        if isinstance(instance, float) and numeric and not math.isfinite(instance):
            yield jsonschema.ValidationError(f"{instance!r} is not a finite number")
        elif isinstance(instance, float) and "integer" in names and "number" not in names:
            whole = f" (write {int(instance)}, without a decimal point)" if instance.is_integer() else ""
            yield jsonschema.ValidationError(f"{instance!r} is not an integer{whole}")
        else:
            yield from base(validator, types, instance, schema)

    return check


def _with_defaults(validator_class: type) -> type:
    """A strict validator that fills `default` values in while it walks the config."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    keywords = {"properties": set_defaults, "type": _strict_type(validator_class.VALIDATORS["type"])}
    return jsonschema.validators.extend(validator_class, keywords)


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def key_path(parts: Any) -> str:
    """`families.dropout.rates[3]` from a jsonschema path deque."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _number_written_as_text(error: jsonschema.ValidationError) -> bool:
    """A number expected, text like `1e-3` found: YAML floats need a dot (`1.0e-3`), a common surprise."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return False
    if not {"number", "integer"} & set(_type_names(error.validator_value)):
        return False
    try:
        float(error.instance)
    except ValueError:
        return False
    return True


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message with the offending value quoted briefly (it quotes it whole)."""
    if isinstance(error.instance, (str, list, dict)) and len(error.instance) > 8:
        return error.message.replace(repr(error.instance), brief(error.instance))
    return error.message


def _unknown_key_hints(keys: list[Any], known: Iterable[str]) -> list[str]:
    """What sets each unknown key apart from the key it resembles: look-alike characters, a typo."""
    hints = []
    for key in keys[:5]:
        if not isinstance(key, str):
            continue
        if not (key.isascii() and key.isprintable()):
            hints.append(f"{brief(key)} contains {non_ascii_characters(key)}")
        close = difflib.get_close_matches(key[:64], list(known), n=1)
        if close:
            hints.append(f"did you mean {close[0]!r} for {brief(key)}?")
    return hints


def describe_error(error: jsonschema.ValidationError) -> str:
    """One line per error: where, what was wrong, and what is allowed."""
    where = key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = brief(error.instance)
    if error.validator == "additionalProperties":
        known = schema.get("properties", {})
        allowed = ", ".join(sorted(known)) or "none"
        extra = sorted(set(error.instance) - set(known), key=str)
        hints = "".join(f"{hint}; " for hint in _unknown_key_hints(extra, known))
        return f"unknown key {listing(extra, limit=5, quote=True)} in {where} ({hints}allowed keys: {allowed})"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{where}: {value} is not allowed (allowed values: {allowed})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator in ("minItems", "minProperties") and error.validator_value == 1:
        return f"{where}: must not be empty"
    if error.validator == "maxItems":
        return f"{where}: has {len(error.instance)} entries, more than the limit of {error.validator_value}"
    if error.validator == "maxLength":
        return f"{where}: is {len(error.instance)} characters long, more than the limit of {error.validator_value}"
    if "propertyNames" in error.absolute_schema_path:
        return f"{where}: key {value} is not allowed ({_message(error)})"
    if error.validator == "pattern" and schema.get("description"):
        return f"{where}: {value} does not match the allowed form ({schema['description']})"
    if error.validator == "uniqueItems":
        return f"{where}: has duplicate entries {value}"
    if _number_written_as_text(error):
        return f"{where}: {_message(error)} (YAML reads {error.instance[:MAX_QUOTED]} as text; write a number such as 1.0e-3 or 0.001)"
    description = schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {_message(error)}{hint}"


def _most_specific(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Drop errors at a key whose type is already wrong: `inf` need not also exceed the maximum."""
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    return [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in mistyped]


def _sort_key(parts: Any) -> list[tuple[int, int, str]]:
    """Order errors by key path: list indices numerically, and never compare an int with a str."""
    return [(0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in parts]


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of `config` with every default filled in.

    Raises ConfigError with one line per problem, most specific first.
    """
    filled = copy.deepcopy(dict(config))
    _refuse_resnet_hidden_units(filled.get("model"))
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(filled), key=lambda e: (_sort_key(e.absolute_path), e.message))
    if errors:
        raise ConfigError("invalid study config: " + "; ".join(describe_error(e) for e in _most_specific(errors)))
    _check_combinations(filled)
    _check_input_groups(filled)
    _check_model_kind(config.get("model") or {}, filled["model"])
    return filled


@cache
def schema_defaults(block: str) -> dict[str, Any]:
    """The `default` of each key of a block of the config schema; a nested block is dotted (`families.nsdropout`)."""
    rule = load_schema()
    for key in block.split("."):
        rule = rule["properties"][key]
    return {key: entry["default"] for key, entry in rule["properties"].items() if "default" in entry}


@cache
def schema_absent(block: str) -> dict[str, Any]:
    """The `x-absent` of each key of a top-level block: what leaving the key out means (never filled in)."""
    properties = load_schema()["properties"][block]["properties"]
    return {key: rule["x-absent"] for key, rule in properties.items() if "x-absent" in rule}


def model_kind(model: Mapping[str, Any]) -> str:
    """A model mapping's kind, with what its absence means (the schema's `x-absent`)."""
    return model.get("kind", schema_absent("model")["kind"])


FILE_MODEL_KEYS = ("kind", "path", "weights", "dropout_after")  # a file model's own layers decide the rest
KIND_ONLY_KEYS = {"path": "file", "weights": "file", "dropout_after": "file", "builder": "builder"}


def _refuse_resnet_hidden_units(model: Any) -> None:
    """Kind resnet has no dense hidden layers: `hidden_units` in any form (also `[]` or null,
    which the schema would refuse with a message that asks for a list) is this one line."""
    if isinstance(model, Mapping) and model.get("kind") == "resnet" and "hidden_units" in model:
        raise ConfigError(
            "invalid study config: model.hidden_units: does not apply to kind resnet (it has no dense hidden layers: "
            "global pooling feeds the softmax; model.filters and model.block_widths set its widths)"
        )


def _check_model_kind(given: Mapping[str, Any], model: dict[str, Any]) -> None:
    """Keys that mean nothing for the model's kind are refused, not ignored; a file model drops the MLP defaults."""
    kind = model_kind(model)
    for key, owner in KIND_ONLY_KEYS.items():
        if key in given and kind != owner:
            raise ConfigError(f"invalid study config: model.{key}: applies to kind {owner} only (this model is kind {kind})")
    if kind == "builder" and "builder" not in given:
        raise ConfigError("invalid study config: model.builder: kind builder needs the name of a builder file (workflow/ablation_lab/models/builders/<name>.py)")  # fmt: skip
    if kind == "resnet":
        _refuse_resnet_hidden_units(given)
        del model["hidden_units"]  # the schema default of the dense models
    if kind != "file":
        return
    if "path" not in given:
        raise ConfigError("invalid study config: model.path: kind file needs the path of a .keras file")
    extra = sorted(set(given) - set(FILE_MODEL_KEYS))
    if extra:
        raise ConfigError(
            f"invalid study config: model.{extra[0]}: does not apply to kind file (its layers come from model.path; "
            "the dropout and activation families change rates and activations)"
        )
    for key in set(model) - set(FILE_MODEL_KEYS):
        del model[key]  # schema defaults of the built-in models


def _check_combinations(config: Mapping[str, Any]) -> None:
    declared = set(config["families"])
    seen: dict[frozenset[str], int] = {}
    for index, pair in enumerate(config["combinations"]):
        missing = [name for name in pair if name not in declared]
        if missing:
            raise ConfigError(
                f"invalid study config: combinations[{index}]: family {missing[0]!r} is crossed but not declared "
                f"under families (declared: {', '.join(sorted(declared)) or 'none'})"
            )
        if frozenset(pair) in seen:
            raise ConfigError(
                f"invalid study config: combinations[{index}]: crosses the same families as combinations[{seen[frozenset(pair)]}]"
            )
        seen[frozenset(pair)] = index


def _check_input_groups(config: Mapping[str, Any]) -> None:
    """Refuse options that mean nothing for a group's kind, rather than silently ignoring them."""
    groups = config["families"].get("input", {}).get("groups", [])
    for index, group in enumerate(groups):
        where = f"families.input.groups[{index}]"
        kind = group["kind"]
        if kind in IMAGE_GROUP_KINDS and "named" in group:
            raise ConfigError(f"invalid study config: {where}.named: applies only to kind 'features', not to kind {kind!r}")
        if kind in IMAGE_GROUP_KINDS and "size" not in group:
            raise ConfigError(f"invalid study config: {where}: kind {kind!r} needs a size (pixels per group)")
        if kind not in IMAGE_GROUP_KINDS and "size" in group:
            raise ConfigError(
                f"invalid study config: {where}.size: applies only to kinds {', '.join(IMAGE_GROUP_KINDS)}, not to kind {kind!r}"
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a study file, as the Snakefile does."""
    return validate_config(load_study_yaml(path))


def merge_studies(studies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Study files given together (`--configfile a.yaml b.yaml`): later keys over earlier ones,
    nested blocks merged key by key, as Snakemake merges its config files."""
    merged: dict[str, Any] = {}
    for study in studies:
        _merge_into(merged, study)
    return merged


def _merge_into(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
