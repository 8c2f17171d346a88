"""What every dialect declares about each of its POST endpoints (its table, at the end of its module),
and the token counts its answers carry.

A dialect (llamafleet/protocol/openai.py, native.py, rerank.py, responses.py, messages.py) owns its
request schema, its translation to the engine's chat/completion requests, its pure answer builders,
and how to read the tokens an answer used (for quotas and metrics). llamafleet/protocol/endpoints.py
gathers the tables; the gateway's routes and the engine's routers are made from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass
class Tokens:
    """Tokens one answer (or one stream event) says it used."""

    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def take(self, found: Tokens | None) -> None:
        """Fold in what one event said (a streamed API says prompt and completion in different events)."""
        if found is not None:
            self.prompt = max(self.prompt, found.prompt)
            self.completion = max(self.completion, found.completion)


UsageReader = Callable[[Any], "Tokens | None"]  # an answer or stream event's JSON → its counts, if any
PieceCounter = Callable[[Any], int]  # a stream event's JSON → content pieces it carries


def input_output(payload: Any, envelope: str) -> Tokens | None:
    """``usage.input_tokens``/``output_tokens`` (the Responses and Messages APIs) of an answer, or of the
    object a stream event carries under ``envelope``."""
    if isinstance(payload, dict) and isinstance(payload.get(envelope), dict):
        payload = payload[envelope]
    found = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(found, dict):
        return None
    return Tokens(int(found.get("input_tokens") or 0), int(found.get("output_tokens") or 0))


def no_usage(payload: Any) -> Tokens | None:
    """For endpoints that run no model (tokenize, token counts): nothing to charge."""
    return None


def no_pieces(payload: Any) -> int:
    return 0


@dataclass(frozen=True)
class Endpoint:
    path: str
    label: str  # the metrics label, and the engine handler's name
    request: type[BaseModel]
    usage: UsageReader = no_usage  # how this dialect's answers and stream events say what they used
    streams: bool = False  # the body's ``stream`` field may ask for server-sent events
    pieces: PieceCounter = no_pieces  # a stream cut short is charged one token per content piece seen
    usage_chunk: bool = False  # a stream's usage comes as a chunk of its own, when include_usage asks
    check: Callable[[Any], object] | None = None  # the engine's own refusals, applied before forwarding
