"""OpenAI-style request schemas and the error envelope, shared by the gateway and the engine.

Requests are validated once at each HTTP edge; unknown fields are ignored (clients send many
optional OpenAI parameters) but known fields must have the right types and ranges, so a bad
body gets a 400 that names the field. OpenAI parameters we do not honour yet (tools, …) are
refused by name unless they ask for the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.endpoint import Endpoint, Tokens

MAX_CHOICES = 16  # per request: prompts × n (each choice takes a slot)

# Unsupported request fields → whether a value asks for nothing beyond the default (then it is fine).
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none"),
    "best_of": lambda v: v in (None, 1),
    "suffix": lambda v: not v,
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
}


# Longer names are refused (400): a name is a DNS label, or base:adapter, or an alias; a client string
# must never grow logs or metrics without bound.
MODEL_NAME_MAX = 256
LORA_MAX = 8  # adapters one request may apply
LORA_SCALE_MAX = 10.0  # |scale|: beyond it an adapter only produces noise
# A request's model name; null means none given (llama-server and several clients send null).
ModelName = Annotated[
    str, BeforeValidator(lambda value: "" if value is None else value), Field(max_length=MODEL_NAME_MAX)
]


class PredictionPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class Prediction(BaseModel):
    """OpenAI's ``prediction``: ``{"type": "content", "content": text or [text parts]}``."""

    type: Literal["content"]
    content: str | list[PredictionPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = Field(
        default="", description="Model name, an alias, or base:adapter (empty: the gateway's default model)"
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES, description="Choices to generate (per prompt)")
    user: str | None = None
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    # llama.cpp extensions, named as llama-server names them
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=0)
    ignore_eos: bool = Field(default=False, description="Keep generating past end-of-generation tokens")
    speculative: bool = Field(
        default=True, description="false: no speculative decoding for this request (where the model has it)"
    )
    prediction: Prediction | None = Field(
        default=None,
        description="OpenAI's Predicted Outputs: text the answer is expected to repeat (a file being "
        "edited); drafts are taken from it too where the model speculates, and ignored elsewhere",
    )
    lora: list[LoraChoice] | None = Field(
        default=None, max_length=LORA_MAX, description="Adapters to apply, beside base:adapter"
    )
    # Constrained output: at most one of these three.
    response_format: ResponseFormat | None = None
    json_schema: dict[str, Any] | None = Field(default=None, description="llama-server's: a JSON schema")
    grammar: str | None = Field(default=None, description="llama-server's: a GBNF grammar with a root rule")
    # OpenAI (and llama-server) parameters this server does not honour yet. Each is refused with a
    # 400 naming it unless it asks for the default, so an app that asks for JSON or for tool calls
    # never silently gets prose instead.
    functions: list[Any] | None = None
    function_call: Any = None
    best_of: int | None = None
    suffix: str | None = None
    modalities: list[str] | None = None
    audio: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _not_honoured(cls, value: Any, info: ValidationInfo) -> Any:
        if not UNSUPPORTED[info.field_name](value):  # type: ignore[index]
            raise ValueError(f"{info.field_name} is not supported by this server yet; leave it out")
        return value

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


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``; ``schema`` beside ``json_object`` is llama-server's extension."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with the schema")
        return self


class LoraChoice(BaseModel):
    name: str = Field(min_length=1, max_length=MODEL_NAME_MAX)
    scale: float | None = Field(
        default=None, ge=-LORA_SCALE_MAX, le=LORA_SCALE_MAX, allow_inf_nan=False,
        description="Defaults to the scale given when it was loaded",
    )  # fmt: skip


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str = Field(min_length=1)
    arguments: str = Field(default="{}", description="JSON text, as OpenAI sends it")


class ToolCallMessage(BaseModel):
    """A tool call in an assistant message of the history."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: dict[str, str]

    @property
    def name(self) -> str:
        return self.function.get("name", "")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallMessage] | None = None  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# What the server itself passes to a chat template (nodeagent/engine/chat.py).
TEMPLATE_VARIABLES = frozenset({
    "messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "raise_exception", "strftime_now",
    "functions", "function_call", "tool_choice",
})  # fmt: skip


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(
        default=None, description="Several calls in one answer; off unless asked, as in llama-server"
    )
    # llama-server's and vLLM's: how the chat template renders this conversation
    add_generation_prompt: bool = Field(
        default=True,
        description="End the prompt with the assistant's turn opening (false: continue the last)",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description='Variables for the chat template, e.g. {"enable_thinking": false}'
    )

    @field_validator("chat_template_kwargs")
    @classmethod
    def _not_the_templates_own(cls, kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        taken = sorted(set(kwargs or {}) & TEMPLATE_VARIABLES)
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by the server, not by chat_template_kwargs")
        return kwargs

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatCompletionRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [t.function.name for t in self.tools or []]
            if self.tool_choice.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.name!r}, which is not in tools")
        elif self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def logprobs_wanted(self) -> int | None:
        """None: no logprobs; n: each token's and the n most likely alternatives'."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, texts (one choice each), token ids, or lists of token ids"
    )
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20, description="Alternatives per token (0: none)")

    def logprobs_wanted(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a text or token ids."""
        prompt: Any = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise InvalidRequest("prompt is empty", "prompt")
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        if len(prompt) * self.n > MAX_CHOICES:
            raise InvalidRequest(f"at most {MAX_CHOICES} choices per request (prompts × n)", "prompt")
        return list(prompt)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = Field(
        default="", description="Model name or alias (empty: the gateway's default model)"
    )
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


ADAPTER_NAME = r"^[A-Za-z0-9._-]+$"


class AdapterLoadRequest(BaseModel):
    """Load a LoRA adapter at runtime: the engine's POST /adapters, fanned out by the gateway."""

    name: str = Field(min_length=1, pattern=ADAPTER_NAME, description="Used as base:name in requests")
    path: str = Field(min_length=1, description="LoRA adapter GGUF on the engine's node")
    scale: float = Field(default=1.0, description="Default scale when a request does not give one")


_Request.model_rebuild()
ResponseFormat.model_rebuild()
ChatCompletionRequest.model_rebuild()
CompletionRequest.model_rebuild()


Validated = TypeVar("Validated", bound=BaseModel)


def validate_as(
    cls: type[Validated], data: dict[str, Any], param: Callable[[str], str] = lambda where: where
) -> Validated:
    """``data`` as ``cls``, for a request translated from another API's: its first problem is a 400
    naming the field (``param`` maps our field path to the caller's), never a 500."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param(where)) from None


def usage(payload: Any) -> Tokens | None:
    """``usage.prompt_tokens``/``completion_tokens`` of an answer or a stream's usage chunk
    (embeddings and rerank: ``prompt_tokens`` and ``total_tokens`` only)."""
    found = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(found, dict):
        return None
    prompt = int(found.get("prompt_tokens") or 0)
    completion = int(found.get("completion_tokens") or 0)
    if not completion and found.get("total_tokens"):
        prompt = max(prompt, int(found["total_tokens"]))
    return Tokens(prompt, completion)


def pieces(payload: Any) -> int:
    """Content pieces in one stream chunk: each choice's text (completions) or delta content (chat)."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return sum(
        1
        for choice in choices or []
        if isinstance(choice, dict) and (choice.get("text") or (choice.get("delta") or {}).get("content"))
    )


ENDPOINTS = (
    Endpoint("/v1/chat/completions", "chat", ChatCompletionRequest, usage, streams=True, pieces=pieces,
             usage_chunk=True),
    Endpoint("/v1/completions", "completions", CompletionRequest, usage, streams=True, pieces=pieces,
             usage_chunk=True),
    Endpoint("/v1/embeddings", "embeddings", EmbeddingRequest, usage),
)  # fmt: skip
