"""JSON schema → GBNF: integer bounds match exactly the integers between them, and keywords the
converter would ignore are refused by path instead of silently not enforced."""

from __future__ import annotations

import random
import re

import pytest

from llamafleet.core.errors import InvalidRequest
from nodeagent.engine.json_schema import integer_range, schema_grammar


def as_regex(gbnf: str) -> re.Pattern[str]:
    """The alternation integer_range writes, as a Python regex (same syntax once quotes go)."""
    return re.compile(re.sub(r'"(.)"', lambda m: re.escape(m[1]), gbnf).replace(" ", ""))


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 0), (0, 9), (1, 120), (5, 5), (7, 1234), (10, 99), (19, 20), (-20, -3), (-5, 17), (-1000, 0),
     (0, None), (5, None), (37, None), (None, -4), (None, 0), (None, 250), (99, 100), (100, 999)],
)  # fmt: skip
def test_integer_ranges_match_exactly_the_integers_between_their_bounds(
    low: int | None, high: int | None
) -> None:
    pattern = as_regex(integer_range(low, high))
    for n in range(-1500, 1500):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == inside, (low, high, n)
    for text in ("01", "-0", "00", "007", "-", ""):
        assert not pattern.fullmatch(text), text  # never a leading zero or a negative zero


def test_random_ranges_hold_at_their_edges() -> None:
    rng = random.Random(5)
    for _ in range(300):
        low = rng.randint(-(10**6), 10**6)
        high = low + rng.randint(0, 10**6)
        pattern = as_regex(integer_range(low, high))
        for n in (low - 1, low, low + 1, (low + high) // 2, high - 1, high, high + 1):
            assert bool(pattern.fullmatch(str(n))) == (low <= n <= high), (low, high, n)


def test_bounded_integers_become_a_grammar_and_unsupported_keywords_are_refused_by_path() -> None:
    grammar = schema_grammar({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0,
                              "exclusiveMaximum": 121}}, "required": ["age"]}, "json_schema")  # fmt: skip
    assert "root ::=" in grammar
    refused = [
        ({"type": "number", "minimum": 0}, "s.minimum"),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}},
            "s.properties.n.multipleOf",
        ),
        ({"type": "array", "items": {"type": "string", "format": "email"}}, "s.items.format"),
        ({"type": "array", "uniqueItems": True}, "s.uniqueItems"),
        ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "s.maxLength"),
        ({"type": ["integer", "null"], "maximum": 3}, "s.maximum"),
        ({"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]}, "s.anyOf.1.not"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "s"),
    ]
    for schema, where in refused:
        with pytest.raises(InvalidRequest) as caught:
            schema_grammar(schema, "s")
        assert caught.value.param == where, schema


def test_strings_hold_no_raw_control_characters() -> None:
    """RFC 8259: a raw newline inside a string is not JSON (a sampled one once broke an answer)."""
    rules = dict(line.split(" ::= ", 1) for line in schema_grammar({"type": "string"}, "x").splitlines())
    first = re.compile(rules["char"].split(" | ", 1)[0])  # the plain-character class, a Python regex too
    for ch in ["\n", "\r", "\t", "\x00", "\x1f", "\x7f", '"', "\\"]:
        assert not first.fullmatch(ch), repr(ch)
    for ch in ["a", " ", "é", "/", "{"]:
        assert first.fullmatch(ch), repr(ch)
    assert '"\\\\" (["\\\\/bfnrt]' in rules["char"]  # escapes stay: \n written as two characters
