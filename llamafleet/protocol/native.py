"""llama-server's own API: POST /completion (what llama.cpp's ecosystem — its web UI's older
versions, SillyTavern, text-generation-webui's llama.cpp client, many scripts — calls), /tokenize,
/detokenize, /apply-template and /v1/chat/completions/input_tokens.

/completion is served as a /v1/completions request underneath and its answer shaped back here: the
same sampling, grammars, stops and prompt cache. Fields that would change the answer and are not
honoured are refused with a 400 naming them. Whole answers: ``{"content", "stop": true,
"stop_type", "stopping_word", "tokens_predicted", "tokens_evaluated", "tokens_cached", …}`` (a list
of them for a list of prompts). Streamed: one ``{"content": piece, "stop": false}`` event per piece,
then the whole's fields with ``stop: true``; no ``[DONE]``, as llama-server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.endpoint import Endpoint, Tokens
from llamafleet.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelName,
    StreamOptions,
    validate_as,
)


class TokenizeRequest(BaseModel):
    """llama-server's POST /tokenize; ``model`` routes it at the gateway."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    content: str
    add_special: bool = False
    with_pieces: bool = Field(default=False, description="Each token with its text, as llama-server does")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""
    tokens: list[int]


class ApplyTemplateRequest(ChatCompletionRequest):
    """llama-server's POST /apply-template: the prompt a chat request becomes (tools included)."""


ApplyTemplateRequest.model_rebuild()


# The same fields, the same meaning, on /v1/completions.
PASSED_THROUGH = {
    "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
    "frequency_penalty", "ignore_eos", "grammar", "json_schema", "speculative",
}  # fmt: skip


class NativeCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = Field(
        default="", description="Model name or alias (empty: the gateway's default model)"
    )
    prompt: str | list[int] | list[str | list[int]] = Field(
        description="A text, token ids, or a list of either"
    )
    n_predict: int = Field(default=-1, ge=-1, description="Tokens to generate (-1: until the end or context)")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, description="-1 or absent: random")
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    ignore_eos: bool = False
    speculative: bool = Field(
        default=True,
        validation_alias=AliasChoices("speculative", "speculative.n_max"),
        description="false (or llama-server's speculative.n_max: 0): no speculative decoding",
    )
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    logit_bias: list[list[Any]] | dict[str, float | bool] | None = None
    n_probs: int = Field(default=0, ge=0)
    return_tokens: bool = False
    # Accepted, and meaningless here: the prompt cache is always kept and the engine picks the slot.
    cache_prompt: bool = True
    id_slot: int = -1

    @field_validator("speculative", mode="before")
    @classmethod
    def _draft_length(cls, value: Any) -> Any:
        """llama-server's speculative.n_max is a draft length: 0 turns speculation off."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value > 0
        return value

    @field_validator("n_probs", "return_tokens")
    @classmethod
    def _not_honoured(cls, value: Any) -> Any:
        if value:
            raise ValueError("is not supported on /completion yet; /v1/completions has logprobs")
        return value

    def several(self) -> bool:
        """Whether the request gives several prompts (a list of texts and/or token lists)."""
        prompt = self.prompt
        return isinstance(prompt, list) and bool(prompt) and not all(isinstance(t, int) for t in prompt)

    def as_completions(self) -> list[CompletionRequest]:
        """One /v1/completions request per prompt, each answered on its own (texts and token lists may
        be mixed, as llama-server allows); bad input is a 400 here, before anything runs."""
        if not self.several():
            return [self.as_completion()]
        if self.stream:
            raise InvalidRequest("a streamed /completion takes one prompt", "prompt")
        return [self.model_copy(update={"prompt": p}).as_completion() for p in self.prompt]

    def as_completion(self) -> CompletionRequest:
        if self.n_predict == 0:
            raise InvalidRequest("n_predict 0 (evaluate the prompt only) is not supported", "n_predict")
        return validate_as(
            CompletionRequest,
            {
                "model": self.model,
                "prompt": self.prompt,
                "max_tokens": None if self.n_predict < 0 else self.n_predict,
                "seed": None if self.seed is None or self.seed < 0 else self.seed,
                "stop": self.stop or None,
                "stream": self.stream,
                "stream_options": StreamOptions(include_usage=True) if self.stream else None,
                "logit_bias": self._bias(),
                **self.model_dump(include=PASSED_THROUGH, exclude_none=True),
            },
        )

    def _bias(self) -> dict[str, float] | None:
        """llama-server's [[token, bias], …] or {token: bias}; ``false`` bans the token."""
        pairs = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias or []
        out: dict[str, float] = {}
        for pair in pairs:
            token, bias = pair if isinstance(pair, tuple) else [*pair, None, None][:2]
            if isinstance(token, str) and not token.isdigit():
                raise InvalidRequest("logit_bias by token text is not supported: give ids", "logit_bias")
            if isinstance(bias, bool):
                bias = -100.0 if bias is False else 0.0
            if not isinstance(bias, int | float):
                raise InvalidRequest(f"logit_bias for token {token} must be a number or false", "logit_bias")
            out[str(token)] = float(bias)
        return out or None


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


def usage(payload: Any) -> Tokens | None:
    """``tokens_evaluated``/``tokens_predicted`` of an answer or its final stream event (``stop``), summed
    over a list of them (a list of prompts)."""
    if isinstance(payload, list):
        parts = [t for t in map(usage, payload) if t is not None]
        return Tokens(sum(t.prompt for t in parts), sum(t.completion for t in parts)) if parts else None
    if isinstance(payload, dict) and "tokens_predicted" in payload and payload.get("stop", True):
        return Tokens(int(payload.get("tokens_evaluated") or 0), int(payload["tokens_predicted"] or 0))
    return None


def pieces(payload: Any) -> int:
    """A streamed piece: ``{"content": piece, "stop": false}``."""
    return int(isinstance(payload, dict) and bool(payload.get("content")) and payload.get("stop") is False)


def _as_completions(body: NativeCompletionRequest) -> object:
    return body.as_completions()


ENDPOINTS = (
    Endpoint("/completion", "completion", NativeCompletionRequest, usage, streams=True, pieces=pieces,
             check=_as_completions),
    Endpoint("/v1/chat/completions/input_tokens", "input_tokens", ChatCompletionRequest),
    Endpoint("/tokenize", "tokenize", TokenizeRequest),
    Endpoint("/detokenize", "detokenize", DetokenizeRequest),
    Endpoint("/apply-template", "apply_template", ApplyTemplateRequest),
)  # fmt: skip
