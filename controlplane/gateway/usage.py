"""Tokens a streamed answer used, for quotas and the token metrics, read by its dialect's own rules
(``usage`` and ``pieces`` of its llamafleet/protocol/ endpoint); what admission reserves before the
engine has counted; the usage chunk asked for on a client's behalf and dropped again.
"""

from __future__ import annotations

import json

from llamafleet.protocol.endpoint import Endpoint, Tokens


class StreamTokens:
    """Counts a streamed answer's tokens from its SSE events: the usage the engine sends, else (a
    stream cut short) one per content chunk seen."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._buffer = b""
        self._chunks = 0
        self._reported = Tokens()
        self._any = False

    @property
    def count(self) -> int:
        """Completion tokens."""
        return self._reported.completion if self._any else self._chunks

    @property
    def total(self) -> int:
        """Prompt + completion when the engine reported them, else the completion chunks seen."""
        return self._reported.total if self._any else self._chunks

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):  # an "event: TYPE" line may come first
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    self._read(line[6:])

    def _read(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        found = self._endpoint.usage(payload)
        if found is not None:
            self._any = True
            self._reported.take(found)
        self._chunks += self._endpoint.pieces(payload)


# What admission reserves against a key's tokens per minute before the engine has counted anything
# (settled to the engine's count when the response ends; controlplane/gateway/access/quota.py).
BYTES_PER_TOKEN = 4  # a request body's size over this: its prompt, roughly (English text and JSON)
COMPLETION_RESERVE = 256  # a request that sets no completion limit


def reservation(raw: bytes, body: object) -> int:
    """Tokens a request may cost: its prompt estimated from its size, plus the completion it allows
    (``max_completion_tokens``, ``max_tokens``, ``max_output_tokens`` or ``n_predict``, times ``n``)."""
    allowed = 0
    if any(
        hasattr(body, name)
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "n_predict")
    ):
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens", "n_predict"):
            value = getattr(body, name, None)
            if isinstance(value, int) and value > 0:
                allowed = value
                break
        else:
            allowed = COMPLETION_RESERVE
    choices = getattr(body, "n", 1)
    return len(raw) // BYTES_PER_TOKEN + allowed * (
        choices if isinstance(choices, int) and choices > 0 else 1
    )


def with_usage(raw: bytes) -> bytes:
    """A streamed OpenAI request's body asking the engine for the usage chunk (to charge its tokens)."""
    body = json.loads(raw)
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


class UsageStripper:
    """Drops the usage-only event (``choices: []`` with ``usage``) from an OpenAI stream whose client did
    not ask for it; every other byte passes as it came, event by event."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        return b"".join(event + b"\n\n" for event in events if not _usage_only(event))

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def _usage_only(event: bytes) -> bool:
    if b'"usage"' not in event or not event.startswith(b"data: {"):
        return False
    try:
        payload = json.loads(event[6:])
    except ValueError:
        return False
    return (
        isinstance(payload, dict) and payload.get("choices") == [] and isinstance(payload.get("usage"), dict)
    )
