"""Constrained decoding: a request's ``response_format``, ``json_schema`` or ``grammar`` → a GBNF
grammar, and llama.cpp's grammar sampler that enforces it token by token.

JSON schemas are converted by nodeagent/engine/json_schema.py (llama-cpp-python's port of
llama.cpp's converter, plus integer bounds, refusing keywords it would not enforce);
``json_object`` is any JSON object.

Checking a whole vocabulary against the grammar costs far more than sampling, so ``Grammar`` is
used the way llama.cpp's common sampler does: the unconstrained choice is checked alone first
(``allows``), and only when the grammar rejects it is every candidate filtered (``restrict``) and
the choice made again. Most tokens of a JSON answer pass the first check.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.openai import ResponseFormat
from nodeagent.engine.json_schema import schema_grammar

# llama_token_data {int32 id; float logit; float p}: candidates as one numpy buffer llama.cpp reads.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def grammar_text(
    response_format: ResponseFormat | None, json_schema: dict[str, Any] | None, grammar: str | None
) -> str:
    """The GBNF a request asks for ('' when unconstrained). At most one of the three may be given."""
    given = [
        name
        for name, value in (("response_format", _constrains(response_format)), ("json_schema", json_schema),
                            ("grammar", grammar))
        if value
    ]  # fmt: skip
    if len(given) > 1:
        raise InvalidRequest(f"give one of {' and '.join(given)}, not both", given[1])
    if grammar:
        return grammar
    schema: dict[str, Any] | None = json_schema
    param = "json_schema"
    if response_format is not None and response_format.type == "json_object":
        schema, param = response_format.schema_, "response_format.schema"
        if schema is None:
            return JSON_GBNF
    elif response_format is not None and response_format.type == "json_schema":
        assert response_format.json_schema is not None
        schema, param = response_format.json_schema.schema_, "response_format.json_schema.schema"
        if schema is None:
            return JSON_GBNF
    if schema is None:
        return ""
    return schema_grammar(schema, param)


def _constrains(response_format: ResponseFormat | None) -> bool:
    return response_format is not None and response_format.type != "text"


def check(vocab: Any, text: str) -> None:
    """Raise InvalidRequest (400) when llama.cpp cannot parse ``text`` as GBNF with a ``root`` rule."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
    if not sampler:
        raise InvalidRequest(
            "the grammar could not be parsed (GBNF with a 'root' rule is expected)", "grammar"
        )
    llama_cpp.llama_sampler_free(sampler)


class Candidates:
    """A logits row as llama.cpp's candidate array, over one reusable numpy buffer."""

    def __init__(self, n_vocab: int) -> None:
        self.data = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self.data["id"] = np.arange(n_vocab, dtype=np.int32)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )

    def load(self, row: np.ndarray, ids: np.ndarray | None = None) -> Any:
        """Fresh candidates from ``row`` (only ``ids`` when given); returns the pointer
        llama_sampler_apply takes."""
        if ids is None:
            self.data["id"] = np.arange(len(self.data), dtype=np.int32)  # a sampler may have sorted them
            self.data["logit"] = row
            size = len(self.data)
        else:
            size = len(ids)
            self.data["id"][:size] = ids
            self.data["logit"][:size] = row[ids]
        self.data["p"][:size] = 0.0
        self.array.size, self.array.selected, self.array.sorted = size, -1, False
        return ctypes.byref(self.array)

    def any_allowed(self) -> bool:
        return bool(np.isfinite(self.data["logit"][: self.array.size]).any())

    def selected(self) -> int:
        return int(self.array.data[self.array.selected].id)  # samplers may point data elsewhere

    def best(self) -> int:
        """The highest logit among the first ``size`` candidates (greedy without a chain)."""
        live = self.data[: self.array.size]
        return int(live["id"][int(live["logit"].argmax())])


class Grammar:
    """llama.cpp's grammar sampler for one sequence; free it when the sequence ends."""

    def __init__(self, vocab: Any, text: str) -> None:
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not self._sampler:
            raise InvalidRequest("the grammar could not be parsed", "grammar")
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self._one_array = llama_cpp.llama_token_data_array(
            data=self._one.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=1,
            selected=-1,
            sorted=False,
        )

    def allows(self, token: int) -> bool:
        self._one["id"], self._one["logit"], self._one["p"] = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one["logit"][0]))

    def restrict(self, candidates: Any) -> None:
        """Set the logit of every candidate the grammar does not allow next to -inf."""
        llama_cpp.llama_sampler_apply(self._sampler, candidates)

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def free(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None
