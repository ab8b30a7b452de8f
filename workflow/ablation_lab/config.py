"""Study configuration: JSON-schema validation with one-line errors and filled-in defaults.

`snakemake.utils.validate` reports a failure as a multi-paragraph dump of the schema; a user
who typed `dropuot` wants one line that names the key and what would have been allowed. This
module validates against the same schema file (`workflow/schemas/config.schema.yaml`), so
the Snakefile and the tests share a single source of truth.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A study configuration that cannot run; the message names the key at fault."""


@cache
def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _with_defaults(validator_class: type) -> type:
    """A validator that fills `default` values in while it walks the config."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def key_path(parts: Any) -> str:
    """`families.dropout.rates[3]` from a jsonschema path deque."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def describe_error(error: jsonschema.ValidationError) -> str:
    """One line per error: where, what was wrong, and what is allowed."""
    where = key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {}))) or "none"
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, extra))} in {where} (allowed keys: {allowed})"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{where}: {error.instance!r} is not allowed (allowed values: {allowed})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "minItems" and error.validator_value == 1:
        return f"{where}: must not be empty"
    if error.validator == "uniqueItems":
        return f"{where}: has duplicate entries {error.instance!r}"
    description = schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {error.message}{hint}"


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of `config` with every default filled in.

    Raises ConfigError with one line per problem, most specific first.
    """
    filled = copy.deepcopy(dict(config))
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(filled), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        raise ConfigError("invalid study config: " + "; ".join(describe_error(e) for e in errors))
    _check_combinations(filled)
    return filled


def _check_combinations(config: Mapping[str, Any]) -> None:
    declared = set(config["families"])
    for index, pair in enumerate(config["combinations"]):
        missing = [name for name in pair if name not in declared]
        if missing:
            raise ConfigError(
                f"combinations[{index}]: family {missing[0]!r} is crossed but not declared "
                f"under families (declared: {', '.join(sorted(declared)) or 'none'})"
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a study file, as the Snakefile does."""
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study config is a mapping of keys, got {type(raw).__name__}")
    return validate_config(raw)
