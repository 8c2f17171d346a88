"""The engine core: what the HTTP surface calls to generate. Interface plus the serial llama-cpp-python core.

The serial core runs one request at a time on llama-cpp-python's high-level API. Native calls
block, so they run on one dedicated worker thread; the event loop only moves chunks. The
batching core (continuous batching over the low-level API) replaces it behind the same
interface.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llamafleet.core.errors import InvalidRequest
from llamafleet.core.openai_api import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

Chunk = dict[str, Any]


@dataclass(frozen=True)
class EngineParams:
    model_path: Path
    model_name: str
    context_length: int
    parallel_slots: int
    n_gpu_layers: int
    n_threads: int


class EngineCore(Protocol):
    """What the engine's HTTP surface needs from whatever generates tokens."""

    @property
    def ready(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def busy(self) -> int: ...

    async def load(self) -> None: ...

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]: ...

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]: ...

    async def complete(self, request: CompletionRequest) -> dict[str, Any]: ...

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]: ...

    async def close(self) -> None: ...


def sampling_kwargs(request: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """OpenAI parameters → llama-cpp-python keyword arguments (only those the client set)."""
    kwargs: dict[str, Any] = {}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.top_p is not None:
        kwargs["top_p"] = request.top_p
    if request.stop is not None:
        kwargs["stop"] = request.stop
    if request.seed is not None:
        kwargs["seed"] = request.seed
    if request.presence_penalty is not None:
        kwargs["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        kwargs["frequency_penalty"] = request.frequency_penalty
    return kwargs


class SerialLlamaCore:
    """One request at a time on ``llama_cpp.Llama``; the others wait their turn in FIFO order."""

    def __init__(self, params: EngineParams) -> None:
        self._params = params
        self._llama: Any = None
        # One thread: llama.cpp contexts are not thread-safe, and this keeps calls ordered.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._turn = asyncio.Lock()
        self._waiting = 0
        self._busy = 0

    @property
    def ready(self) -> bool:
        return self._llama is not None

    @property
    def queue_depth(self) -> int:
        return self._waiting

    @property
    def busy(self) -> int:
        return self._busy

    async def load(self) -> None:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._executor, self._load)
        log.info("loaded %s in %.1fs", self._params.model_path.name, time.monotonic() - started)

    def _load(self) -> Any:
        from llama_cpp import Llama  # native code: imported only inside the engine process

        p = self._params
        return Llama(
            model_path=str(p.model_path),
            n_ctx=p.context_length,
            n_gpu_layers=p.n_gpu_layers,
            n_threads=p.n_threads or None,
            n_threads_batch=p.n_threads or None,
            verbose=False,
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    async def _run(self, fn: Any, /, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        self._waiting += 1
        async with self._turn:
            self._waiting -= 1
            self._busy += 1
            try:
                return await loop.run_in_executor(self._executor, lambda: _invalid_input_guard(fn, **kwargs))
            finally:
                self._busy -= 1

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(
            self._llama.create_chat_completion,
            messages=[m.model_dump(exclude_none=True) | {"content": m.text()} for m in request.messages],
            max_tokens=request.token_limit(),
            **sampling_kwargs(request),
        )
        result["model"] = self._params.model_name
        return result

    async def complete(self, request: CompletionRequest) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(
            self._llama.create_completion,
            prompt=request.prompt_text(),
            max_tokens=request.max_tokens,
            echo=request.echo,
            **sampling_kwargs(request),
        )
        result["model"] = self._params.model_name
        return result

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream(
            self._llama.create_chat_completion,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            messages=[m.model_dump(exclude_none=True) | {"content": m.text()} for m in request.messages],
            max_tokens=request.token_limit(),
            stream=True,
            **sampling_kwargs(request),
        )

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream(
            self._llama.create_completion,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            prompt=request.prompt_text(),
            max_tokens=request.max_tokens,
            stream=True,
            **sampling_kwargs(request),
        )

    async def _stream(self, fn: Any, /, include_usage: bool, **kwargs: Any) -> AsyncIterator[Chunk]:
        """Run a streaming llama-cpp-python call on the worker thread, handing chunks to the loop.

        Cancellation (the client went away) sets ``cancelled``; the worker closes the generator
        at the next token, which frees the engine for the next request.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()
        n_ctx_tokens = [0]

        def produce() -> None:
            try:
                iterator: Iterator[Chunk] = _invalid_input_guard(fn, **kwargs)
                try:
                    for chunk in iterator:
                        if cancelled.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
                    n_ctx_tokens[0] = int(self._llama.n_tokens)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except ValueError as exc:  # raised lazily, on the first next(): see _invalid_input_guard
                error = InvalidRequest(str(exc), "messages" if "messages" in kwargs else "prompt")
                loop.call_soon_threadsafe(queue.put_nowait, error)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        self._waiting += 1
        async with self._turn:
            self._waiting -= 1
            self._busy += 1
            future = loop.run_in_executor(self._executor, produce)
            completion_tokens = 0
            finish_reason = None
            last: Chunk | None = None
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    item["model"] = self._params.model_name
                    if _chunk_has_text(item):
                        completion_tokens += 1  # llama-cpp-python streams one chunk per token
                    finish_reason = _finish_reason(item) or finish_reason
                    last = item
                    yield item
                await future
                if include_usage and last is not None:
                    # The context holds prompt + every evaluated completion token; on "length"
                    # the last sampled token was never evaluated.
                    evaluated = completion_tokens - 1 if finish_reason == "length" else completion_tokens
                    prompt_tokens = max(0, n_ctx_tokens[0] - max(0, evaluated))
                    yield {
                        "id": last.get("id"),
                        "object": last.get("object"),
                        "created": last.get("created"),
                        "model": self._params.model_name,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    }
            finally:
                cancelled.set()
                # Wait for the worker to notice, so the next request finds the engine free.
                if not future.done():
                    await asyncio.shield(future)
                self._busy -= 1


def _finish_reason(chunk: Chunk) -> str | None:
    for choice in chunk.get("choices", []):
        if choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return None


def _chunk_has_text(chunk: Chunk) -> bool:
    for choice in chunk.get("choices", []):
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


def _invalid_input_guard(fn: Any, /, **kwargs: Any) -> Any:
    """llama-cpp-python signals bad input (e.g. a prompt longer than the context) with ValueError."""
    try:
        return fn(**kwargs)
    except ValueError as exc:
        raise InvalidRequest(str(exc), "messages" if "messages" in kwargs else "prompt") from exc
