"""What the emulator's API server does with a CRD's structural schema: prune, default, validate.

In the real API server's order: unknown fields are pruned (or, with ``fieldValidation=Strict``,
rejected), defaults are applied, then the OpenAPI v3 rules (types, enums, patterns, bounds,
required, list-map key uniqueness) are checked and a violation is a 422 Invalid. CEL rules
(``x-kubernetes-validations``) are NOT evaluated here: the emulator has no CEL interpreter
(see docs/KUBERNETES.md).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

Schema = dict[str, Any]


def _keeps_unknown(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or "additionalProperties" in schema


def prune(value: Any, schema: Schema, path: str = "") -> tuple[Any, list[str]]:
    """Drop fields the schema does not know; returns the value and the dropped paths."""
    dropped: list[str] = []
    if isinstance(value, dict) and schema.get("type", "object") == "object" and "properties" in schema:
        props = schema["properties"]
        for key in list(value):
            if key in props:
                value[key], more = prune(value[key], props[key], f"{path}.{key}")
                dropped += more
            elif not _keeps_unknown(schema) and not (path == "" and key in ("apiVersion", "kind")):
                dropped.append(f"{path}.{key}".lstrip("."))
                del value[key]
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in list(value):
            value[key], more = prune(value[key], schema["additionalProperties"], f"{path}.{key}")
            dropped += more
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            value[i], more = prune(item, schema["items"], f"{path}[{i}]")
            dropped += more
    return value, dropped


def default(value: Any, schema: Schema) -> Any:
    """Fill absent properties that have a default, in objects that are present."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = default(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [default(item, schema["items"]) for item in value]
    return value


def _json_schema(schema: Schema) -> Schema:
    """OpenAPI v3 structural schema → JSON Schema (draft 7) for the jsonschema library."""
    out: Schema = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _json_schema(value)
        elif key in (
            "type",
            "enum",
            "pattern",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "required",
            "format",
        ):
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


_VALIDATORS: dict[int, tuple[Schema, jsonschema.Draft7Validator]] = {}


def _validator(schema: Schema) -> jsonschema.Draft7Validator:
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft7Validator(_json_schema(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def validate(value: Any, schema: Schema) -> list[str]:
    """Violations as the API server words them: ``spec.contextLength: Invalid value: …``."""
    validator = _validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.absolute_path) or "<root>"
        problems.append(f"{where}: Invalid value: {error.message}")
    problems += _list_map_duplicates(value, schema, "")
    return problems


def _list_map_duplicates(value: Any, schema: Schema, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                problems += _list_map_duplicates(value[key], sub, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for i, item in enumerate(value):
            ident = tuple((item or {}).get(k) for k in keys)
            if ident in seen:
                problems.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, ident, strict=True))}")
            seen.add(ident)
    return problems
