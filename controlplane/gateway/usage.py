"""Tokens an answer used, read from whichever API shaped it, for quotas and the token metrics.

OpenAI (chat, completions, embeddings): ``usage.prompt_tokens``/``completion_tokens``. Responses
API: ``usage.input_tokens``/``output_tokens`` (streamed inside ``response.completed``). Anthropic
Messages: the same names, the input in ``message_start``'s message and the output in
``message_delta`` (streamed). llama-server's /completion: ``tokens_evaluated``/``tokens_predicted``,
a list of those for a list of prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Tokens:
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


def tokens_in(payload: Any) -> Tokens | None:
    """The counts one answer or stream event carries; None when it carries none."""
    if isinstance(payload, list):
        parts = [t for t in map(tokens_in, payload) if t is not None]
        return Tokens(sum(t.prompt for t in parts), sum(t.completion for t in parts)) if parts else None
    if not isinstance(payload, dict):
        return None
    if "tokens_predicted" in payload and payload.get("stop", True):  # llama-server's /completion
        return Tokens(int(payload.get("tokens_evaluated") or 0), int(payload["tokens_predicted"] or 0))
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        nested = payload.get("response") or payload.get("message")  # Responses / Messages stream events
        usage = nested.get("usage") if isinstance(nested, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    if not completion and usage.get("total_tokens"):  # embeddings: prompt_tokens and total_tokens only
        prompt = max(int(prompt), int(usage["total_tokens"]))
    return Tokens(int(prompt), int(completion))


class StreamTokens:
    """Counts a streamed answer's tokens from its SSE events: the usage the engine sends, else (a
    stream cut short) one per content chunk seen."""

    def __init__(self) -> None:
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
        found = tokens_in(payload)
        if found is not None:
            self._any = True
            self._reported.take(found)
        if not isinstance(payload, dict):
            return
        for choice in payload.get("choices") or []:
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                self._chunks += 1
        if payload.get("content") and payload.get("stop") is False:  # /completion pieces
            self._chunks += 1
