"""OpenAI response and stream-chunk shapes built from the batcher's deltas."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import llama_cpp

from llamafleet import __version__
from nodeagent.engine.logprobs import TokenLogprob, completion_logprobs
from nodeagent.engine.sequence import Usage
from nodeagent.engine.tools import ToolPlan

Chunk = dict[str, Any]
# Which build answered (OpenAI's field; llama-server puts its build there too).
SYSTEM_FINGERPRINT = f"llamafleet-{__version__}-llama-cpp-python-{llama_cpp.__version__}"


@dataclass
class ResponseShape:
    """Builds one request's responses: chat (``chat.completion``) or text (``text_completion``)."""

    kind: Literal["chat", "text"]
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    logprobs: bool = False  # the request asked for them
    _offset: int = 0  # text sent so far (completions' text_offset)

    def __post_init__(self) -> None:
        prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
        self.id = self.id or prefix + uuid.uuid4().hex[:24]

    def head(self, object_: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                "system_fingerprint": SYSTEM_FINGERPRINT}  # fmt: skip

    def _logprobs(self, tokens: list[TokenLogprob], offset: int) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.kind == "chat":
            return {"content": [t.chat() for t in tokens], "refusal": None}
        return completion_logprobs(tokens, offset)

    def whole(
        self,
        text: str,
        finish_reason: str | None,
        usage: Usage,
        logprobs: list[TokenLogprob] | None = None,
        offset: int = 0,
        stop_word: str = "",
    ) -> dict[str, Any]:
        """``offset``: where the generated text starts in ``text`` (after an echoed prompt);
        ``stop_word``: the stop string that ended it, reported as vLLM does (``stop_reason``)."""
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": self._logprobs(logprobs or [], 0),
                "finish_reason": finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": self._logprobs(logprobs or [], offset),
                "finish_reason": finish_reason,
            }
        if stop_word:
            choice["stop_reason"] = stop_word
        object_ = "chat.completion" if self.kind == "chat" else "text_completion"
        return self.head(object_) | {"choices": [choice], "usage": usage.openai()} | usage.timings_field()

    def chunk(
        self,
        text: str | None,
        finish_reason: str | None = None,
        first: bool = False,
        logprobs: list[TokenLogprob] | None = None,
        stop_word: str = "",
    ) -> Chunk:
        lp = self._logprobs(logprobs, self._offset) if logprobs else None
        self._offset += len(text or "")
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": lp,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish_reason}
        if stop_word:
            choice["stop_reason"] = stop_word
        object_ = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self.head(object_) | {"choices": [choice]}

    def chunks_of(self, whole: dict[str, Any]) -> list[Chunk]:
        """A whole chat answer as stream chunks: the role, the content, each tool call (id, name and
        all its arguments in one delta), then the finish reason alone."""
        choice = whole["choices"][0]
        message = choice["message"]
        out = [self.chunk(None, first=True)]
        if message.get("content"):
            out.append(self.chunk(message["content"], logprobs=None))
            if choice.get("logprobs"):
                out[-1]["choices"][0]["logprobs"] = choice["logprobs"]
        for index, call in enumerate(message.get("tool_calls") or []):
            delta_chunk = self.chunk(None)
            delta_chunk["choices"][0]["delta"] = {"tool_calls": [{"index": index, **call}]}
            out.append(delta_chunk)
        out.append(self.chunk(None, choice["finish_reason"]))
        return out

    def usage_chunk(self, usage: Usage) -> Chunk:
        object_ = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self.head(object_) | {"choices": [], "usage": usage.openai()} | usage.timings_field()


def with_tool_calls(whole: dict[str, Any], tools: ToolPlan) -> dict[str, Any]:
    """A chat answer read for tool calls: content and ``tool_calls``, finish_reason ``tool_calls``."""
    choice = whole["choices"][0]
    content, calls = tools.parse(choice["message"]["content"] or "")
    choice["message"]["content"] = content
    if calls:
        choice["message"]["tool_calls"] = [c.openai() for c in calls]
        if choice["finish_reason"] == "stop":
            choice["finish_reason"] = "tool_calls"
    return whole


def embeddings_response(model: str, vectors: list[list[float]], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
