"""The engine's handlers for llama-server's own endpoints (llamafleet/protocol/native.py's table)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from llamafleet.protocol.native import (
    ApplyTemplateRequest,
    DetokenizeRequest,
    NativeCompletionRequest,
    TokenizeRequest,
    native_stream,
    native_whole,
)
from llamafleet.protocol.openai import ChatCompletionRequest
from nodeagent.engine.routes.serving import Handler, Serving


def handlers(s: Serving) -> dict[str, Handler]:
    async def completion(body: NativeCompletionRequest, request: Request) -> Response:
        """Served as /v1/completions, the answer shaped back as llama-server's."""
        s.check_ready()
        body.as_completions()  # bad input (a streamed list too) is a 400 before anything runs
        if body.stream:
            chunks = native_stream(s.core.complete_stream(body.as_completion()), body.model or s.model_name)
            return await s.stream(chunks, "completion", done=b"")
        return await s.once(native_whole(body, s.core.complete), "completion", request)

    async def input_tokens(body: ChatCompletionRequest) -> dict[str, int]:
        """The prompt tokens a chat request would take, without running it."""
        s.check_ready()
        return {"input_tokens": s.core.count_prompt_tokens(body)}

    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        s.check_ready()
        tokens = s.core.tokenize(body.content, body.add_special)
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": s.core.detokenize([t])} for t in tokens]}
        return {"tokens": tokens}

    async def detokenize(body: DetokenizeRequest) -> dict[str, str]:
        s.check_ready()
        return {"content": s.core.detokenize(body.tokens)}

    async def apply_template(body: ApplyTemplateRequest) -> dict[str, str]:
        s.check_ready()
        return {"prompt": s.core.apply_template(body)}

    return {
        "completion": completion, "input_tokens": input_tokens, "tokenize": tokenize,
        "detokenize": detokenize, "apply_template": apply_template,
    }  # fmt: skip
