"""The inference endpoints, written once: every dialect's POST route that carries a model, with the
request type that validates its body. The gateway registers each with its generic forwarder
(controlplane/gateway/routers/inference.py), the engine with its handler of the same ``label``
(nodeagent/engine/http.py); tests/unit/contract/test_endpoints.py checks both serve exactly these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llamafleet.core.messages_api import CountTokensRequest, MessagesRequest
from llamafleet.core.native_api import NativeCompletionRequest
from llamafleet.core.openai_api import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from llamafleet.core.rerank_api import RerankRequest
from llamafleet.core.responses_api import ResponsesRequest


@dataclass(frozen=True)
class Endpoint:
    path: str
    label: str  # the metrics label, and the engine handler's name
    request: type[BaseModel]
    streams: bool = False  # the body's ``stream`` field may ask for server-sent events
    usage_chunk: bool = False  # a stream's usage comes as a chunk of its own, when include_usage asks
    check: Callable[[Any], object] | None = None  # the engine's own refusals, applied before forwarding


def _as_chat(body: Any) -> object:
    return body.as_chat()


def _as_completions(body: Any) -> object:
    return body.as_completions()


INFERENCE: tuple[Endpoint, ...] = (
    Endpoint("/v1/chat/completions", "chat", ChatCompletionRequest, streams=True, usage_chunk=True),
    Endpoint("/v1/completions", "completions", CompletionRequest, streams=True, usage_chunk=True),
    Endpoint("/completion", "completion", NativeCompletionRequest, streams=True, check=_as_completions),
    Endpoint("/v1/embeddings", "embeddings", EmbeddingRequest),
    Endpoint("/v1/rerank", "rerank", RerankRequest),
    Endpoint("/v1/responses", "responses", ResponsesRequest, streams=True, check=_as_chat),
    Endpoint("/v1/messages", "messages", MessagesRequest, streams=True, check=_as_chat),
    Endpoint("/v1/chat/completions/input_tokens", "input_tokens", ChatCompletionRequest),
    Endpoint("/v1/messages/count_tokens", "count_tokens", CountTokensRequest, check=_as_chat),
    Endpoint("/tokenize", "tokenize", TokenizeRequest),
    Endpoint("/detokenize", "detokenize", DetokenizeRequest),
    Endpoint("/apply-template", "apply_template", ApplyTemplateRequest),
)

# Streams whose usage comes in a chunk of its own, only when stream_options.include_usage asks for it
# (the Responses and Messages streams always carry theirs; llama-server's /completion too).
USAGE_CHUNK_PATHS = frozenset(e.path for e in INFERENCE if e.usage_chunk)
