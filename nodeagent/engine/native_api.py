"""Answers llama-server's POST /completion from our /v1/completions results, in its shapes.

Whole: ``{"content", "stop": true, "stop_type", "stopping_word", "tokens_predicted",
"tokens_evaluated", "tokens_cached", …}`` (a list of them for a list of prompts). Streamed: one
``{"content": piece, "stop": false}`` event per piece, then the whole's fields with ``stop: true``;
no ``[DONE]``, as llama-server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from llamafleet.core.native_api import NativeCompletionRequest
from llamafleet.core.openai_api import CompletionRequest

Chunk = dict[str, Any]
Complete = Callable[[CompletionRequest], Awaitable[dict[str, Any]]]


def _final(model: str, content: str, choice: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """``answer``: the whole (or the usage chunk) that carries ``usage`` and ``timings``."""
    usage = answer["usage"]
    word = choice.get("stop_reason") or ""
    stop_type = "limit" if choice.get("finish_reason") == "length" else ("word" if word else "eos")
    return {
        "index": 0,
        "content": content,
        "tokens": [],
        "id_slot": -1,
        "stop": True,
        "model": model,
        "tokens_predicted": usage["completion_tokens"],
        "tokens_evaluated": usage["prompt_tokens"],
        "tokens_cached": usage["prompt_tokens_details"]["cached_tokens"],
        "truncated": False,
        "has_new_line": "\n" in content,
        "stop_type": stop_type,
        "stopping_word": word,
    } | ({"timings": answer["timings"]} if "timings" in answer else {})


def _one(whole: dict[str, Any]) -> dict[str, Any]:
    choice = whole["choices"][0]
    return _final(whole["model"], choice["text"], choice, whole)


async def native_whole(request: NativeCompletionRequest, complete: Complete) -> dict[str, Any] | list[Any]:
    """One answer for one prompt; a list of prompts gets a list, in order (each its own usage)."""
    if (
        isinstance(request.prompt, list)
        and request.prompt
        and not all(isinstance(t, int) for t in request.prompt)
    ):
        prompts: list[Any] = list(request.prompt)
        answers = await asyncio.gather(
            *(complete(request.model_copy(update={"prompt": p}).as_completion()) for p in prompts)
        )
        return [_one(a) | {"index": k} for k, a in enumerate(answers)]
    return _one(await complete(request.as_completion()))


async def native_stream(
    chunks: AsyncIterator[dict[str, Any]], model: str
) -> AsyncGenerator[dict[str, Any], None]:
    """/v1/completions chunks (with the usage chunk last) → llama-server's /completion events."""
    content: list[str] = []
    finish: dict[str, Any] = {}
    async for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if choice.get("text"):
                content.append(choice["text"])
                yield {"index": 0, "content": choice["text"], "tokens": [], "stop": False, "id_slot": -1,
                       "model": model}  # fmt: skip
            if choice.get("finish_reason"):
                finish = choice
        if chunk.get("usage"):
            yield _final(model, "", finish, chunk)
