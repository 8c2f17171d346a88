"""OpenAI-style request schemas and the error envelope, shared by the gateway and the engine.

Requests are validated once at each HTTP edge; unknown fields are ignored (clients send many
optional OpenAI parameters) but known fields must have the right types and ranges, so a bad
body gets a 400 that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamafleet.core.errors import InvalidRequest


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="Model name, or base:adapter")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, description="Only one choice per request is supported")
    user: str | None = None
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    # llama.cpp extensions, named as llama-server names them
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=0)
    ignore_eos: bool = Field(default=False, description="Keep generating past end-of-generation tokens")
    lora: list[LoraChoice] | None = Field(default=None, description="Adapters to apply, beside base:adapter")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported; send several requests for several choices")
        return n

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"bias for token {key} must be between -100 and 100")
        return bias

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def adapter_choices(self, served_model: str) -> list[tuple[str, float | None]]:
        """Adapters named by ``base:adapter`` in ``model`` plus those in ``lora``, in that order."""
        chosen: list[tuple[str, float | None]] = []
        if self.model.startswith(served_model + ":"):
            chosen.append((self.model[len(served_model) + 1 :], None))
        chosen.extend((choice.name, choice.scale) for choice in self.lora or [])
        return chosen


class LoraChoice(BaseModel):
    name: str = Field(min_length=1)
    scale: float | None = Field(default=None, description="Defaults to the scale given when it was loaded")


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise InvalidRequest("prompt must be a string or a list with exactly one string", "prompt")
        return self.prompt[0]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == [] or (isinstance(value, list) and any(v in ("", []) for v in value)):
            raise ValueError("input must not be empty")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per embedding to return: a text, or a list of token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(v, int) for v in self.input):
            return [list(self.input)]  # type: ignore[arg-type]
        return list(self.input)  # type: ignore[arg-type]


class AdapterLoadRequest(BaseModel):
    """Load a LoRA adapter at runtime: the engine's POST /adapters, fanned out by the gateway."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Used as base:name in requests")
    path: str = Field(min_length=1, description="LoRA adapter GGUF on the engine's node")
    scale: float = Field(default=1.0, description="Default scale when a request does not give one")


_Request.model_rebuild()
ChatCompletionRequest.model_rebuild()
CompletionRequest.model_rebuild()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_param(loc: tuple[int | str, ...]) -> str:
    """The field a pydantic error points at, e.g. ("body", "messages", 0, "role") → "messages.0.role"."""
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"
