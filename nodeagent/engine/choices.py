"""Several choices in one answer: ``n`` > 1, and /v1/completions with a list of prompts.

Each choice is its own sequence in the batcher (identical prompts share their KV cells through the
prompt cache); this module puts their answers together: one response with ``choices[k]``, or one
stream whose chunks carry each choice's index, interleaved as they come, with one usage total.
Prompt tokens count once per prompt, completion tokens per choice, as OpenAI counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from llamafleet.core.errors import LlamafleetError

T = TypeVar("T")
Chunk = dict[str, Any]


async def gather_choices(jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Run every choice; the first to fail cancels the others and its error is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(job)) for job in jobs]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


async def _awaited(job: Awaitable[T]) -> T:
    return await job


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if isinstance(exc, LlamafleetError):
            return exc
    return group.exceptions[0]


def merge_wholes(wholes: list[dict[str, Any]], first_of_prompt: list[bool]) -> dict[str, Any]:
    """One response from each choice's; ``first_of_prompt[k]``: choice k's prompt is counted."""
    merged = dict(wholes[0])
    merged["choices"] = [whole["choices"][0] | {"index": k} for k, whole in enumerate(wholes)]
    merged["usage"] = _usage([w["usage"] for w in wholes], first_of_prompt)
    merged.pop("timings", None)  # one request's; several choices have no single one
    return merged


def _usage(usages: list[dict[str, Any]], first_of_prompt: list[bool]) -> dict[str, Any]:
    counted = [u for u, first in zip(usages, first_of_prompt, strict=True) if first]
    prompt = sum(u["prompt_tokens"] for u in counted)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in counted)
    completion = sum(u["completion_tokens"] for u in usages)
    total = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    details = [u["completion_tokens_details"] for u in usages if "completion_tokens_details" in u]
    if details:  # a prediction's accepted and rejected tokens, over every choice
        total["completion_tokens_details"] = {k: sum(d[k] for d in details) for k in details[0]}
    return total


async def merged_stream(
    streams: list[AsyncIterator[Chunk]], first_of_prompt: list[bool], include_usage: bool
) -> AsyncGenerator[Chunk, None]:
    """Every choice's chunks as they come, each with its choice's index; their usage chunks become
    one total at the end. A failing choice ends the stream with its error; leaving early (the
    client went away) cancels every choice's sequence."""
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(k: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((k, chunk))
        except Exception as exc:  # handed to the reader, who raises it
            await queue.put((k, exc))
        await queue.put((k, None))

    tasks = [asyncio.ensure_future(pump(k, s)) for k, s in enumerate(streams)]
    usages: list[dict[str, Any] | None] = [None] * len(streams)
    last: Chunk | None = None
    try:
        running = len(streams)
        while running:
            k, item = await queue.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            if not item["choices"] and "usage" in item:
                usages[k] = item["usage"]
                last = item
                continue
            item["choices"][0]["index"] = k
            yield item
        if include_usage and last is not None and all(u is not None for u in usages):
            total = _usage([u for u in usages if u is not None], first_of_prompt)
            yield {k: v for k, v in last.items() if k != "timings"} | {"usage": total}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
