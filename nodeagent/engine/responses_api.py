"""Chat answers as OpenAI Responses API objects and stream events (``POST /v1/responses``).

The engine serves a Responses request as the chat request it translates to
(llamafleet/core/responses_api.py) and reshapes the answer: a ``message`` output item with
``output_text``, one ``function_call`` item per tool call, ``incomplete`` at max_output_tokens.
Streams follow the Responses event sequence: response.created, then per item
output_item.added → (content_part.added → output_text.delta… → output_text.done →
content_part.done | function_call_arguments.delta → …done) → output_item.done, then
response.completed with the whole response.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from llamafleet.core.responses_api import ResponsesRequest

Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """One Responses answer, built whole or event by event."""

    def __init__(self, request: ResponsesRequest, model: str) -> None:
        self.request = request
        self.id = _id("resp")
        self.model = model
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self._sequence = 0

    def response(self, status: str) -> dict[str, Any]:
        request = self.request
        incomplete = status == "completed" and self.finish == "length"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model,
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "instructions": request.instructions,
            "output": self.output,
            "parallel_tool_calls": bool(request.parallel_tool_calls),
            "tool_choice": request.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or []],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens,
            "text": (
                request.text.model_dump(by_alias=True, exclude_none=True)
                if request.text
                else {"format": {"type": "text"}}
            ),
            "usage": self.usage,
            "store": False,
            "previous_response_id": None,
        }

    def take_usage(self, usage: dict[str, Any]) -> None:
        self.usage = {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": usage["prompt_tokens_details"]["cached_tokens"]},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        }

    def from_chat(self, whole: dict[str, Any]) -> dict[str, Any]:
        """A whole chat answer → the whole Responses object."""
        choice = whole["choices"][0]
        message = choice["message"]
        if message.get("content"):
            self.output.append(_message_item(_id("msg"), message["content"], "completed"))
        for call in message.get("tool_calls") or []:
            self.output.append(_call_item(call, "completed"))
        self.finish = choice["finish_reason"]
        self.take_usage(whole["usage"])
        return self.response("completed")

    def event(self, type_: str, **fields: Any) -> Event:
        self._sequence += 1
        return {"type": type_, "sequence_number": self._sequence - 1, **fields}

    async def events(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Event]:
        """A chat stream (with usage) → Responses stream events."""
        yield self.event("response.created", response=self.response("in_progress"))
        yield self.event("response.in_progress", response=self.response("in_progress"))
        text: dict[str, Any] | None = None  # the message item being streamed
        async for chunk in chunks:
            if chunk.get("usage"):
                self.take_usage(chunk["usage"])
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("content"):
                    if text is None:
                        text = _message_item(_id("msg"), "", "in_progress")
                        for event in self._open_text(text):
                            yield event
                    text["content"][0]["text"] += delta["content"]
                    yield self.event(
                        "response.output_text.delta",
                        item_id=text["id"],
                        output_index=len(self.output) - 1,
                        content_index=0,
                        delta=delta["content"],
                        logprobs=[],
                    )
                for call in delta.get("tool_calls") or []:
                    if text is not None:
                        for event in self._close_text(text):
                            yield event
                        text = None
                    for event in self._call_events(call):
                        yield event
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
        if text is not None:
            for event in self._close_text(text):
                yield event
        final = self.response("completed")
        yield self.event(f"response.{final['status']}", response=final)

    def _open_text(self, item: dict[str, Any]) -> list[Event]:
        self.output.append(item)
        index = len(self.output) - 1
        return [
            self.event("response.output_item.added", output_index=index, item={**item, "content": []}),
            self.event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def _close_text(self, item: dict[str, Any]) -> list[Event]:
        index = self.output.index(item)
        item["status"] = "completed"
        part = item["content"][0]
        return [
            self.event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self.event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _call_events(self, call: dict[str, Any]) -> list[Event]:
        item = _call_item(call, "in_progress")
        self.output.append(item)
        index = len(self.output) - 1
        arguments = item["arguments"]
        events = [
            self.event("response.output_item.added", output_index=index, item={**item, "arguments": ""}),
            self.event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=arguments,
            ),
            self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=arguments,
            ),
        ]
        item["status"] = "completed"
        events.append(self.event("response.output_item.done", output_index=index, item=item))
        return events


def _message_item(id_: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": id_,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(call: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _id("fc"),
        "call_id": call["id"],
        "name": call["function"]["name"],
        "arguments": call["function"]["arguments"],
        "status": status,
    }
