"""The engine core: what the HTTP surface calls — OpenAI requests in, sequences to the batcher, responses out.

This runs on the event loop. It turns a request into token ids (chat template, tokenizer),
sampling parameters and adapter references, submits a ``Sequence`` to the batcher thread and
relays the deltas it posts back. Closing a stream early cancels the sequence, which frees its
slot at the batcher's next step.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from llamafleet.contract.replica import AdapterSpec
from llamafleet.core import tracing
from llamafleet.core.errors import InvalidRequest, Unavailable
from llamafleet.core.request_defaults import RequestDefaults
from llamafleet.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llamafleet.protocol.rerank import RerankRequest
from nodeagent.engine import tenancy
from nodeagent.engine.adapters import AdapterRegistry
from nodeagent.engine.batcher import Batcher, BatcherSettings
from nodeagent.engine.chat import ChatTemplate, RenderOptions
from nodeagent.engine.choices import gather_choices, merge_wholes, merged_stream
from nodeagent.engine.draft_model import P_MIN, DraftModel, load_draft
from nodeagent.engine.grammar import check, grammar_text
from nodeagent.engine.logprobs import TokenLogprob
from nodeagent.engine.metrics import EngineMetrics
from nodeagent.engine.model_server_metrics import ServingLoad
from nodeagent.engine.native import NativeConfig, NativeModel
from nodeagent.engine.openai_shapes import Chunk, ResponseShape, embeddings_response, with_tool_calls
from nodeagent.engine.request_spans import record_spans
from nodeagent.engine.sampling import SamplingParams
from nodeagent.engine.sequence import Delta, Sequence, Usage
from nodeagent.engine.tools import ToolFormat, ToolPlan, detect, plan
from nodeagent.engine.watchdog import DecodeWatchdog
from nodeagent.hardware.cpus import affinity

log = logging.getLogger(__name__)

AnyRequest = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class EngineParams:
    model_name: str
    native: NativeConfig
    batcher: BatcherSettings
    adapters: tuple[AdapterSpec, ...] = ()  # loaded before the engine reports ready
    decode_timeout_s: float = 0.0  # > 0: exit when one decode step takes longer (see watchdog.py)
    request_defaults: RequestDefaults = field(default_factory=RequestDefaults)  # the model's (models file)
    chat_template: str = ""  # Jinja replacing the GGUF's own (the model's chatTemplate)
    draft_path: Path | None = None  # speculative "draft": the draft model's GGUF
    draft_p_min: float = P_MIN  # its drafts stop at a less likely token


class EngineCore(Protocol):
    """What the engine's HTTP surface needs from whatever generates tokens."""

    @property
    def ready(self) -> bool: ...

    async def load(self) -> None: ...

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]: ...

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]: ...

    async def complete(self, request: CompletionRequest) -> dict[str, Any]: ...

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]: ...

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]: ...

    async def rerank(self, request: RerankRequest) -> dict[str, Any] | list[Any]: ...

    def slots(self) -> list[dict[str, Any]]: ...

    def serving_load(self) -> ServingLoad:
        """Requests running and waiting, KV cells in use, as of the last batched step."""

    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def apply_template(self, request: ChatCompletionRequest) -> str: ...

    def count_prompt_tokens(self, request: ChatCompletionRequest) -> int: ...

    def adapters(self) -> list[dict[str, Any]]: ...

    async def load_adapter(self, spec: AdapterSpec) -> dict[str, Any]: ...

    async def unload_adapter(self, name: str) -> None: ...

    def threads(self) -> int: ...

    async def set_threads(self, n: int) -> int: ...

    async def close(self) -> None: ...


def sampling_params(
    request: AnyRequest, eog_tokens: list[int], grammar: str = "", defaults: RequestDefaults | None = None
) -> SamplingParams:
    """OpenAI and llama.cpp request fields → sampling parameters; unset ones take the model's defaults,
    then llama-server's."""
    given = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repeat_penalty": request.repeat_penalty,
        "repeat_last_n": request.repeat_last_n,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "seed": request.seed,
    }
    fallback = defaults.model_dump(exclude_none=True) if defaults is not None else {}
    values: dict[str, Any] = {k: fallback[k] for k in given if k in fallback}
    values |= {k: v for k, v in given.items() if v is not None}
    bias = {int(k): v for k, v in (request.logit_bias or {}).items()}
    if request.ignore_eos:
        bias.update(dict.fromkeys(eog_tokens, float("-inf")))  # as llama-server does
    if bias:
        values["logit_bias"] = bias
    return SamplingParams(**values, grammar=grammar)


class BatchingCore:
    """Continuous batching over llama.cpp's low-level API (see ``batcher``)."""

    def __init__(self, params: EngineParams, metrics: EngineMetrics) -> None:
        self._params = params
        self._metrics = metrics
        self._model: NativeModel | None = None
        self._draft: DraftModel | None = None  # speculative "draft"
        self._batcher: Batcher | None = None
        self._registry: AdapterRegistry | None = None
        self._template: ChatTemplate | None = None
        self._defaults = params.request_defaults
        self._tool_format = ToolFormat.GENERIC
        self._ready = False  # after the model and the adapters given at start are loaded
        self._threads = params.native.n_threads  # llama.cpp's, as last set on the batcher thread

    @property
    def ready(self) -> bool:
        return self._ready

    async def load(self) -> None:
        p = self._params
        started = time.monotonic()
        model = await asyncio.to_thread(NativeModel, p.native)
        self._model = model
        if p.draft_path is not None:
            self._draft = DraftModel(await asyncio.to_thread(load_draft, model, p.draft_path), p.draft_p_min)
        self._threads = model.threads
        self._metrics.threads.set(self._threads)
        template = p.chat_template or model.chat_template()
        if p.chat_template:
            log.info(
                "chat template: the model's chatTemplate (%d characters), not the GGUF's",
                len(p.chat_template),
            )
        self._template = ChatTemplate(template, model.token_text(model.bos), model.token_text(model.eos))
        self._defaults = p.request_defaults.over(RequestDefaults.from_gguf(model.meta))
        self._tool_format = detect(template)
        if self._defaults != RequestDefaults():
            log.info("request defaults: %s", self._defaults.as_json())
        self._registry = AdapterRegistry(model)
        loop = asyncio.get_running_loop()

        def post(items: list[tuple[Sequence, Delta]]) -> None:
            loop.call_soon_threadsafe(_deliver, items)

        watchdog = DecodeWatchdog(p.decode_timeout_s) if p.decode_timeout_s > 0 else None
        if watchdog is not None:
            watchdog.start()
        batcher = Batcher(model, p.batcher, self._registry, post, self._metrics, watchdog, self._draft)
        batcher.start()
        self._batcher = batcher
        for spec in p.adapters:
            await self.load_adapter(spec)
        self._ready = True
        log.info(
            "loaded %s in %.3fs: %d slots × %d tokens of context, batch %d",
            p.native.model_path.name,
            time.monotonic() - started,
            p.batcher.slots,
            model.n_ctx_seq,
            model.n_batch,
        )

    async def close(self) -> None:
        self._ready = False
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.stop)
        if self._registry is not None:
            self._registry.close()
        if self._draft is not None:
            self._draft.model.close()
            self._draft = None
        if self._model is not None:
            self._model.close()
            self._model = None

    # --- parts, checked ----------------------------------------------------------------------

    def _model_(self) -> NativeModel:
        if self._model is None or self._batcher is None:
            raise Unavailable("model is still loading", retry_after=1)
        return self._model

    def _batcher_(self) -> Batcher:
        if self._batcher is None:
            raise Unavailable("model is still loading", retry_after=1)
        return self._batcher

    def _registry_(self) -> AdapterRegistry:
        if self._registry is None:
            raise Unavailable("model is still loading", retry_after=1)
        return self._registry

    # --- generation --------------------------------------------------------------------------

    def _sequence(
        self,
        request: AnyRequest,
        prompt: list[int],
        max_tokens: int | None,
        request_id: str,
        tool_grammar: str = "",
        choice: int = 0,
    ) -> Sequence:
        """``choice``: which of several (n > 1); a seeded request seeds choice k with seed + k."""
        if not prompt:
            raise InvalidRequest("the prompt is empty", "prompt")
        model = self._model_()
        grammar = grammar_text(request.response_format, request.json_schema, request.grammar)
        if grammar and tool_grammar:
            raise InvalidRequest(
                "tools cannot be combined with response_format, json_schema or grammar", "tools"
            )
        grammar = grammar or tool_grammar
        if grammar:
            check(model.vocab, grammar)
        adapters = self._registry_().acquire(request.adapter_choices(self._params.model_name))
        tenant, preempts = tenancy.CURRENT.get()
        return Sequence(
            "generate",
            prompt,
            asyncio.Queue(),
            sampling=_for_choice(sampling_params(request, model.eog_tokens, grammar, self._defaults), choice),
            max_tokens=max_tokens,
            stops=request.stops(),
            adapters=adapters,
            request_id=request_id,
            tenant=tenant,
            preempts=preempts,
            trace=tenancy.TRACE.get(),
            top_logprobs=request.logprobs_wanted(),
            speculative=request.speculative,
            predicted=model.tokenize(request.prediction.text(), add_special=False)
            if request.prediction
            else [],
        )

    def _chat_sequence(
        self, request: ChatCompletionRequest, shape: ResponseShape, tools: ToolPlan | None, choice: int = 0
    ) -> Sequence:
        model = self._model_()
        assert self._template is not None
        prompt = model.tokenize(self._render(request, tools), add_special=True)
        limit = request.token_limit() or self._defaults.max_tokens
        return self._sequence(request, prompt, limit, shape.id, tools.grammar if tools else "", choice)

    def _tool_plan(self, request: ChatCompletionRequest) -> ToolPlan | None:
        self._model_()
        return plan(request, self._tool_format)

    def _text_sequence(
        self, request: CompletionRequest, shape: ResponseShape, text: str | list[int], choice: int
    ) -> Sequence:
        model = self._model_()
        if isinstance(text, str):
            prompt = model.tokenize(text, add_special=True)
        elif any(t < 0 or t >= model.n_vocab for t in text):
            raise InvalidRequest(f"token ids must be in [0, {model.n_vocab})", "prompt")
        else:
            prompt = list(text)
        given = "max_tokens" in request.model_fields_set
        limit = request.max_tokens if given else (self._defaults.max_tokens or request.max_tokens)
        return self._sequence(request, prompt, limit, shape.id, "", choice)

    async def _deltas(self, seq: Sequence) -> AsyncGenerator[Delta, None]:
        """Submit and relay deltas until the last one; leaving early cancels the sequence."""
        batcher = self._batcher_()
        try:
            batcher.submit(seq)
        except BaseException:
            if seq.adapters:
                batcher.call(lambda: self._registry_().release(seq.adapters))
            raise
        finished = False
        error = ""
        try:
            while True:
                delta: Delta = await seq.inbox.get()
                if delta.error is not None:
                    finished, error = True, type(delta.error).__name__
                    raise delta.error
                finished = delta.final
                yield delta
                if finished:
                    return
        finally:
            if not finished:
                batcher.cancel(seq)
                error = "cancelled"
            if tracing.tracer() is not None:
                record_spans(seq, self._params.model_name, error)

    async def _collect(self, seq: Sequence, shape: ResponseShape, prefix: str = "") -> dict[str, Any]:
        parts = [prefix]
        finish_reason: str | None = None
        usage = Usage(len(seq.prompt), 0, 0)
        logprobs: list[TokenLogprob] = []
        stop_word = ""
        async with contextlib.aclosing(self._deltas(seq)) as deltas:
            async for delta in deltas:
                parts.append(delta.text)
                logprobs.extend(delta.logprobs)
                if delta.final:
                    finish_reason, stop_word = delta.finish_reason, delta.stop_word
                    usage = delta.usage or usage
        return shape.whole("".join(parts), finish_reason, usage, logprobs, len(prefix), stop_word)

    async def _stream(
        self, seq: Sequence, shape: ResponseShape, include_usage: bool, prefix: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        deltas = self._deltas(seq)
        async with contextlib.aclosing(deltas):
            first = await anext(deltas)  # submits: bad input raises here, before any chunk exists
            if shape.kind == "chat":
                yield shape.chunk(None, first=True)  # role only, content null (as llama-server)
            elif prefix:
                yield shape.chunk(prefix)
            usage: Usage | None = None
            delta: Delta | None = first
            while delta is not None:
                if delta.text or delta.logprobs:
                    yield shape.chunk(delta.text, logprobs=delta.logprobs)
                if delta.final:  # alone, with an empty delta, as OpenAI's last chunk is
                    yield shape.chunk(None, delta.finish_reason, stop_word=delta.stop_word)
                if delta.final:
                    usage = delta.usage
                    break
                delta = await anext(deltas, None)
            if include_usage and usage is not None:
                yield shape.usage_chunk(usage)

    def _shape(self, kind: Literal["chat", "text"], request: AnyRequest, id_: str = "") -> ResponseShape:
        model = request.model or self._params.model_name
        return ResponseShape(kind, model, id=id_, logprobs=request.logprobs_wanted() is not None)

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        tools = self._tool_plan(request)
        shape = self._shape("chat", request)

        async def one(choice: int) -> dict[str, Any]:
            whole = await self._collect(self._chat_sequence(request, shape, tools, choice), shape)
            return with_tool_calls(whole, tools) if tools else whole

        if request.n == 1:
            return await one(0)
        wholes = await gather_choices([one(k) for k in range(request.n)])
        return merge_wholes(wholes, [k == 0 for k in range(request.n)])

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        tools = self._tool_plan(request)
        first = self._shape("chat", request)

        def one(choice: int) -> AsyncIterator[Chunk]:
            shape = first if choice == 0 else self._shape("chat", request, first.id)
            if tools is not None:  # calls are known once the answer is whole: sent then, as deltas
                return self._lazy(
                    lambda: self._stream_tool_answer(request, shape, tools, include_usage, choice)
                )
            return self._lazy(
                lambda: self._stream(self._chat_sequence(request, shape, None, choice), shape, include_usage)
            )

        if request.n == 1:
            return one(0)
        firsts = [k == 0 for k in range(request.n)]
        return merged_stream([one(k) for k in range(request.n)], firsts, include_usage)

    async def _stream_tool_answer(
        self,
        request: ChatCompletionRequest,
        shape: ResponseShape,
        tools: ToolPlan,
        include_usage: bool,
        choice: int,
    ) -> AsyncGenerator[Chunk, None]:
        seq = self._chat_sequence(request, shape, tools, choice)
        whole = with_tool_calls(await self._collect(seq, shape), tools)
        for chunk in shape.chunks_of(whole):
            yield chunk
        if include_usage:
            yield shape.head("chat.completion.chunk") | {"choices": [], "usage": whole["usage"]}

    def _choices(self, request: CompletionRequest) -> list[tuple[str | list[int], int]]:
        """(prompt, choice number for it) for every choice a completions request asks for."""
        return [(prompt, k) for prompt in request.prompts() for k in range(request.n)]

    def _echo(self, request: CompletionRequest, prompt: str | list[int]) -> str:
        if not request.echo:
            return ""
        return prompt if isinstance(prompt, str) else self.detokenize(prompt)

    async def complete(self, request: CompletionRequest) -> dict[str, Any]:
        shape = self._shape("text", request)
        jobs = self._choices(request)

        async def one(prompt: str | list[int], choice: int) -> dict[str, Any]:
            seq = self._text_sequence(request, shape, prompt, choice)
            return await self._collect(seq, shape, self._echo(request, prompt))

        if len(jobs) == 1:
            return await one(*jobs[0])
        wholes = await gather_choices([one(prompt, k) for prompt, k in jobs])
        return merge_wholes(wholes, [k == 0 for _, k in jobs])

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        first = self._shape("text", request)

        def one(prompt: str | list[int], choice: int, shape: ResponseShape) -> AsyncIterator[Chunk]:
            prefix = self._echo(request, prompt) or None
            return self._lazy(
                lambda: self._stream(
                    self._text_sequence(request, shape, prompt, choice), shape, include_usage, prefix
                )
            )

        jobs = self._choices(request)
        if len(jobs) == 1:
            return one(*jobs[0], first)
        streams = [one(p, k, first if i == 0 else self._shape("text", request, first.id))
                   for i, (p, k) in enumerate(jobs)]  # fmt: skip
        return merged_stream(streams, [k == 0 for _, k in jobs], include_usage)

    @staticmethod
    async def _lazy(make: Callable[[], AsyncGenerator[Chunk, None]]) -> AsyncIterator[Chunk]:
        """Build the sequence on the first ``anext``, so its errors surface where the HTTP layer looks."""
        async with contextlib.aclosing(make()) as chunks:
            async for chunk in chunks:
                yield chunk

    # --- embeddings --------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        model = self._model_()
        if not self._params.native.embeddings:
            raise InvalidRequest(
                "this model is not served with embeddings; set embeddings: true on the model", "model"
            )
        if request.dimensions is not None and request.dimensions != model.n_embd:
            raise InvalidRequest(f"this model's embeddings have {model.n_embd} dimensions", "dimensions")
        seqs = []
        for item in request.inputs():
            tokens = model.tokenize(item, add_special=True) if isinstance(item, str) else item
            if any(t < 0 or t >= model.n_vocab for t in tokens):
                raise InvalidRequest(f"token ids must be in [0, {model.n_vocab})", "input")
            seqs.append(Sequence("embed", tokens, asyncio.Queue(), request_id=f"embd-{id(item)}"))
        vectors = await asyncio.gather(*(self._embedding(seq) for seq in seqs))
        data: list[Any] = vectors
        if request.encoding_format == "base64":
            data = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        return embeddings_response(
            request.model or self._params.model_name, data, sum(len(s.prompt) for s in seqs)
        )

    async def rerank(self, request: RerankRequest) -> dict[str, Any] | list[Any]:
        model = self._model_()
        if not (self._params.native.embeddings and model.pooling == "rank"):
            raise InvalidRequest(
                "this model is not served as a reranker (a reranker GGUF with embeddings: true)", "model"
            )
        inputs = [self._rerank_tokens(model, request.query, doc) for doc in request.candidates()]
        seqs = [
            Sequence("embed", tokens, asyncio.Queue(), request_id=f"rank-{k}")
            for k, tokens in enumerate(inputs)
        ]
        scores = [vector[0] for vector in await asyncio.gather(*(self._embedding(seq) for seq in seqs))]
        return request.answer(request.model or self._params.model_name, scores, sum(map(len, inputs)))

    @staticmethod
    def _rerank_tokens(model: NativeModel, query: str, document: str) -> list[int]:
        """The pair as llama-server lays it out: the GGUF's rerank template when it has one, else
        [BOS] query [EOS] [SEP] document [EOS], each as the vocabulary adds them."""
        template = model.rerank_template()
        if template:
            text = template.replace("{query}", query).replace("{document}", document)
            return model.tokenize(text, add_special=False)
        end = model.eos if model.eos >= 0 else model.sep
        tokens = [model.bos] if model.adds("bos") else []
        tokens += model.tokenize(query, add_special=False)
        tokens += ([end] if model.adds("eos") else []) + ([model.sep] if model.adds("sep") else [])
        tokens += model.tokenize(document, add_special=False)
        return tokens + ([end] if model.adds("eos") else [])

    async def _embedding(self, seq: Sequence) -> list[float]:
        async with contextlib.aclosing(self._deltas(seq)) as deltas:
            async for delta in deltas:
                if delta.embedding is not None:
                    return delta.embedding
        raise InvalidRequest("no embedding was produced", "input")

    # --- introspection and adapters ----------------------------------------------------------

    def slots(self) -> list[dict[str, Any]]:
        return self._batcher_().slots_view()

    def serving_load(self) -> ServingLoad:
        return self._batcher.load if self._batcher is not None else ServingLoad()

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self._model_().tokenize(text, add_special)

    def detokenize(self, tokens: list[int]) -> str:
        model = self._model_()
        if any(t < 0 or t >= model.n_vocab for t in tokens):
            raise InvalidRequest(f"token ids must be in [0, {model.n_vocab})", "tokens")
        return b"".join(model.piece(t) for t in tokens).decode("utf-8", "replace")

    def apply_template(self, request: ChatCompletionRequest) -> str:
        return self._render(request, self._tool_plan(request))

    def count_prompt_tokens(self, request: ChatCompletionRequest) -> int:
        """The tokens this chat request's prompt would be (tools included), as a chat would tokenize it."""
        return len(self._model_().tokenize(self.apply_template(request), add_special=True))

    def _render(self, request: ChatCompletionRequest, tools: ToolPlan | None) -> str:
        assert self._template is not None
        options = RenderOptions.of(request)
        if tools is None:
            return self._template.render(request.messages, options)
        return self._template.render_payload(tools.messages, tools.tools, options)

    def adapters(self) -> list[dict[str, Any]]:
        return self._registry.listed() if self._registry else []

    async def load_adapter(self, spec: AdapterSpec) -> dict[str, Any]:
        registry = self._registry_()
        return await asyncio.wrap_future(
            self._batcher_().call(lambda: registry.load(spec.name, Path(spec.path), spec.scale))
        )

    async def unload_adapter(self, name: str) -> None:
        registry = self._registry_()
        await asyncio.wrap_future(self._batcher_().call(lambda: registry.unload(name)))

    def threads(self) -> int:
        return self._threads

    async def set_threads(self, n: int) -> int:
        """Change llama.cpp's thread count between two decode steps; returns what it runs with now.
        More threads than CPUs this process may run on is always a mistake (they would only wait)."""
        model = self._model_()
        limit = len(affinity())
        if n > limit:
            raise InvalidRequest(
                f"threads {n} is more than the {limit} CPUs this engine may run on", "threads"
            )

        draft = self._draft

        def apply() -> int:
            model.set_threads(n)
            if draft is not None:
                draft.model.set_threads(n)
            return model.threads

        self._threads = await asyncio.wrap_future(self._batcher_().call(apply))
        self._metrics.threads.set(self._threads)
        log.info("threads: %d", self._threads)
        return self._threads


def _for_choice(params: SamplingParams, choice: int) -> SamplingParams:
    if choice and params.seed is not None:
        return dataclasses.replace(params, seed=params.seed + choice)
    return params


def _deliver(items: list[tuple[Sequence, Delta]]) -> None:
    for seq, delta in items:
        seq.inbox.put_nowait(delta)
