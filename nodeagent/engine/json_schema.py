"""JSON schema → GBNF, refusing what it would not enforce.

llama-cpp-python's converter (a port of llama.cpp's) handles types, properties and required,
additionalProperties, items/prefixItems with min/maxItems, enum/const, anyOf/oneOf/allOf, $ref,
string min/maxLength, patterns and the date/time/uuid formats — and silently ignores the rest,
so an answer could parse yet break the schema. Here every keyword is checked first: integer
bounds (minimum, maximum, exclusive ones) are added to the converter (an exact digit-range
grammar), and any other keyword that would not be enforced is a 400 naming where it is, as
OpenAI's strict mode does. What is accepted is what every answer validates against.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

from llamafleet.core.errors import InvalidRequest

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "strict"}  # fmt: skip
STRUCTURE = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions"}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
# keyword → the types it needs (None: the converter also applies it when "type" is absent)
TYPED = {
    **dict.fromkeys(BOUNDS, ("integer",)),
    "minLength": ("string",),
    "maxLength": ("string",),
    "pattern": (None, "string"),
    "format": (None, "string"),
    "items": (None, "array"),
    "prefixItems": (None, "array"),
    "minItems": (None, "array"),
    "maxItems": (None, "array"),
    "properties": (None, "object"),
    "required": (None, "object"),
    "additionalProperties": (None, "object"),
}
MAX_DIGITS = 15  # as llama.cpp's converter: integers of at most 16 digits


def schema_grammar(schema: dict[str, Any], param: str) -> str:
    """GBNF for ``schema``; InvalidRequest (param: where the keyword is) for what it cannot enforce."""
    for where, problem in _problems(schema, param):
        raise InvalidRequest(
            f"{problem}; this server cannot enforce it: remove it or rephrase the schema", where
        )
    converter: Any = _BoundedConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "request")
        converter.visit(resolved, "")
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
        raise InvalidRequest(f"this JSON schema cannot be enforced: {exc}", param) from None
    return str(converter.format_grammar())


def enforceable(schema: Any) -> Any:
    """``schema`` without the keywords this server cannot enforce (for tool parameters, which
    OpenAI enforces only in strict mode: a tool is not refused for a ``format: uri``)."""
    if not isinstance(schema, dict):
        return schema if isinstance(schema, bool) else {}
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if not _keyword_problem(schema, key, value):
            kept[key] = value
    for key in ("properties", "$defs", "definitions"):
        if isinstance(kept.get(key), dict):
            kept[key] = {name: enforceable(sub) for name, sub in kept[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(kept.get(key), list):
            kept[key] = [enforceable(sub) for sub in kept[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(kept.get(key), dict):
            kept[key] = enforceable(kept[key])
    return kept


def _keyword_problem(schema: dict[str, Any], key: str, value: Any) -> str:
    kind = schema.get("type")
    if key in ANNOTATIONS or key in STRUCTURE:
        return ""
    if key not in TYPED:
        return f"the keyword {key!r} is not supported"
    if kind not in TYPED[key]:
        return f'{key!r} needs "type": {TYPED[key][-1]!r} (got {kind!r})'
    if key == "format" and value not in FORMATS:
        return f"format {value!r} is not supported (supported: {', '.join(sorted(FORMATS))})"
    if key in ("minLength", "maxLength") and "pattern" in schema:
        return f"{key!r} beside a pattern is not enforced (put the length in the pattern)"
    if key in BOUNDS and not isinstance(value, int):
        return f"{key!r} must be an integer for an integer"
    return ""


def _problems(schema: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield path, "a schema must be an object"
        return
    for key, value in schema.items():
        problem = _keyword_problem(schema, key, value)
        if problem:
            yield f"{path}.{key}", problem
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            yield from _problems(sub, f"{path}.{key}.{name}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            yield from _problems(sub, f"{path}.{key}.{i}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _problems(schema[key], f"{path}.{key}")


# A JSON string holds no raw control character (RFC 8259): llama.cpp's own converter excludes them,
# llama-cpp-python's copy allows any character but `"` and `\`, and a sampled newline inside a
# string then made the answer unparseable (seen at temperature 1).
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


class _BoundedConverter(SchemaConverter):
    """The library's converter, plus integers between bounds, and JSON's own string characters."""

    def _add_primitive(self, name: str, rule: Any) -> Any:
        if name == "char":
            rule = BuiltinRule(JSON_CHAR, rule.deps)
        return super()._add_primitive(name, rule)

    def visit(self, schema: Any, name: str) -> Any:
        if isinstance(schema, dict) and schema.get("type") == "integer" and any(b in schema for b in BOUNDS):
            low, high = _bounds(schema)
            return self._add_rule(name or "root", f"({integer_range(low, high)}) space")  # type: ignore[no-untyped-call]
        return super().visit(schema, name)  # type: ignore[no-untyped-call]


def _bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = max(low, schema["exclusiveMinimum"] + 1) if low is not None else schema["exclusiveMinimum"] + 1
    if "exclusiveMaximum" in schema:
        high = (
            min(high, schema["exclusiveMaximum"] - 1) if high is not None else schema["exclusiveMaximum"] - 1
        )
    if low is not None and high is not None and low > high:
        raise ValueError(f"no integer lies between {low} and {high}")
    return low, high


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF alternation matching exactly the JSON integers in [low, high] (None: unbounded)."""
    parts: list[str] = []
    if low is None or low < 0:  # negatives: "-" then a magnitude in [max(1, -high), -low]
        magnitudes = _naturals(
            max(1, -high) if high is not None and high < 0 else 1, None if low is None else -low
        )
        parts += [f'"-" {p}' for p in magnitudes]
    if high is None or high >= 0:
        parts += _naturals(max(0, low) if low is not None else 0, high)
    return " | ".join(parts)


def _naturals(low: int, high: int | None) -> list[str]:
    """Sequences of digit classes matching the numbers in [low, high] written without leading zeros."""
    if high is None:
        width = len(str(low))
        longer = [f"[1-9] [0-9]{{{width},{MAX_DIGITS}}}"] if width <= MAX_DIGITS else []
        return _naturals(low, 10**width - 1) + longer
    out: list[str] = []
    while len(str(low)) < len(str(high)):
        top = 10 ** len(str(low)) - 1
        out += _same_width(str(low), str(top))
        low = top + 1
    return out + _same_width(str(low), str(high))


def _same_width(low: str, high: str) -> list[str]:
    if low == high:
        return [" ".join(f'"{d}"' for d in low)]
    common = next(i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b)
    prefix = [f'"{d}"' for d in low[:common]]
    rest = len(low) - common - 1
    lo_tail, hi_tail = low[common + 1 :], high[common + 1 :]
    out: list[str] = []
    first, last = int(low[common]), int(high[common])
    if lo_tail != "0" * rest:  # low's own run: low .. low[:common+1] 99…9
        out += _same_width(low, low[: common + 1] + "9" * rest)
        first += 1
    tail_high: list[str] = []
    if hi_tail != "9" * rest:  # high's own run: high[:common+1] 00…0 .. high
        tail_high = _same_width(high[: common + 1] + "0" * rest, high)
        last -= 1
    if first <= last:
        digit = f'"{first}"' if first == last else f"[{first}-{last}]"
        out.append(" ".join([*prefix, digit, *["[0-9]"] * rest]))
    return out + tail_high
