"""The domain error vocabulary; each edge (HTTP, gRPC, CRD status) maps these once, never by message text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LlamafleetError(Exception):
    """Base of every error we raise on purpose. ``message`` is safe to show to clients."""

    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LlamafleetError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Unauthorized(LlamafleetError):
    code = "invalid_api_key"


class Forbidden(LlamafleetError):
    """Authenticated, but this key may not do this (another model, an admin route)."""

    code = "permission_denied"


class JoinRefused(LlamafleetError):
    """The control plane will not give this node a certificate (a wrong token, a taken name)."""

    code = "join_refused"


class SourceDenied(LlamafleetError):
    """A model source refused us (HTTP 401/403, a gated Hugging Face repository): a token is missing."""

    code = "source_denied"


class DiskFull(LlamafleetError):
    """No room for a model file on this node, even after evicting every unused cached model."""

    code = "disk_full"


class InvalidRequest(LlamafleetError):
    """The caller sent something we cannot serve; ``param`` names the offending field."""

    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit the model's context per slot; the numbers travel in the error body."""

    code = "context_length_exceeded"

    def __init__(self, message: str, n_prompt_tokens: int, n_ctx: int, param: str | None = None) -> None:
        super().__init__(message, param)
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx


class NoCapacity(LlamafleetError):
    """Nothing can host the request; ``reasons`` says why, per candidate (node id → reason)."""

    code = "no_capacity"

    def __init__(self, message: str, reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class Unavailable(LlamafleetError):
    """Temporarily unable to serve; try again after ``retry_after`` seconds."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineFailed(LlamafleetError):
    """The engine broke while serving a request (crash, protocol error, bad response)."""

    code = "engine_failed"


class ModelFileInvalid(LlamafleetError):
    """A model file is not a usable GGUF (bad magic, truncated, impossible sizes)."""

    code = "model_invalid"


class ChecksumMismatch(ModelFileInvalid):
    """A downloaded (or local) file's sha256 is not the one its model declares."""

    code = "checksum_mismatch"


class Overloaded(Unavailable):
    """Too many requests are already waiting; the caller should back off ``retry_after`` seconds."""

    code = "queue_full"


class QueueTimeout(Overloaded):
    """Every replica stayed busy for the whole queue timeout (429: the pool is saturated, back off)."""

    code = "queue_timeout"


class ColdStartTimeout(Unavailable):
    """No replica became ready in time for a request held while the model started (503)."""

    code = "cold_start_timeout"


class QuotaExceeded(Unavailable):
    """A key used its requests or tokens per minute; ``retry_after`` is when the window has room."""

    code = "rate_limit_exceeded"


# Every HTTP error answer, the gateway's and the engine's, in every dialect: OpenAI's envelope.
def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_param(loc: tuple[int | str, ...]) -> str:
    """The field a pydantic error points at, e.g. ("body", "messages", 0, "role") → "messages.0.role"."""
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"
