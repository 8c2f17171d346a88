"""llama-server's own POST /completion request: the API llama.cpp's ecosystem (its web UI's older
versions, SillyTavern, text-generation-webui's llama.cpp client, many scripts) calls.

It is served as a /v1/completions request underneath (nodeagent/engine/native_api.py shapes the
answer back): the same sampling, grammars, stops and prompt cache. Fields that would change the
answer and are not honoured here are refused with a 400 naming them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamafleet.core.errors import InvalidRequest
from llamafleet.core.openai_api import CompletionRequest, ModelName, StreamOptions, validate_as

# The same fields, the same meaning, on /v1/completions.
PASSED_THROUGH = {
    "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
    "frequency_penalty", "ignore_eos", "grammar", "json_schema",
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
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    logit_bias: list[list[Any]] | dict[str, float | bool] | None = None
    n_probs: int = Field(default=0, ge=0)
    return_tokens: bool = False
    # Accepted, and meaningless here: the prompt cache is always kept and the engine picks the slot.
    cache_prompt: bool = True
    id_slot: int = -1

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
