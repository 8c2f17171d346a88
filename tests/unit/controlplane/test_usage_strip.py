"""What admission reserves for a request, and the usage chunk dropped from a stream that did not ask."""

from __future__ import annotations

import json

from controlplane.gateway.usage import COMPLETION_RESERVE, UsageStripper, reservation, with_usage
from llamafleet.protocol.openai import ChatCompletionRequest, EmbeddingRequest


def test_a_reservation_is_the_prompt_by_size_plus_the_completion_allowed() -> None:
    body = {"model": "m", "max_tokens": 10, "n": 2, "messages": [{"role": "user", "content": "x" * 4000}]}
    raw = json.dumps(body).encode()
    assert reservation(raw, ChatCompletionRequest.model_validate(body)) == len(raw) // 4 + 20
    unlimited = {**body, "max_tokens": None, "n": 1}
    raw = json.dumps(unlimited).encode()
    assert (
        reservation(raw, ChatCompletionRequest.model_validate(unlimited))
        == len(raw) // 4 + COMPLETION_RESERVE
    )
    embed = {"model": "m", "input": "y" * 400}
    raw = json.dumps(embed).encode()
    assert reservation(raw, EmbeddingRequest.model_validate(embed)) == len(raw) // 4


def test_the_usage_chunk_is_dropped_and_everything_else_passes_whole() -> None:
    assert json.loads(with_usage(b'{"stream":true,"stream_options":{"x":1}}'))["stream_options"] == {
        "x": 1, "include_usage": True,
    }  # fmt: skip
    stream = (
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    stripper = UsageStripper()
    out = b"".join(stripper.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + stripper.rest()
    assert b"usage" not in out
    assert out == stream.replace(
        b'data: {"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":1}}\n\n', b""
    )
