"""Token counts read from every API's answers and streams (quotas and token metrics depend on them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.gateway.usage import StreamTokens, Tokens, tokens_in


@pytest.mark.parametrize(
    ("answer", "prompt", "completion"),
    [
        ({"usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}, 7, 5),  # OpenAI
        ({"usage": {"prompt_tokens": 9, "total_tokens": 9}}, 9, 0),  # embeddings
        ({"usage": {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}}, 11, 4),  # Responses
        ({"type": "message", "usage": {"input_tokens": 6, "output_tokens": 3}}, 6, 3),  # Anthropic
        ({"content": "hi", "stop": True, "tokens_evaluated": 4, "tokens_predicted": 8}, 4, 8),  # /completion
        (
            [
                {"stop": True, "tokens_evaluated": 2, "tokens_predicted": 3},
                {"stop": True, "tokens_evaluated": 4, "tokens_predicted": 3},
            ],
            6,
            6,
        ),  # /completion, two prompts
    ],
)
def test_whole_answers_of_every_api_are_counted(answer: Any, prompt: int, completion: int) -> None:
    assert tokens_in(answer) == Tokens(prompt, completion)


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        (f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(e).encode() + b"\n\n"
        for name, e in events
    )


def test_an_anthropic_stream_counts_input_from_its_start_and_output_from_its_delta() -> None:
    counter = StreamTokens()
    stream = sse(
        [
            (
                "message_start",
                {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 0}}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
            ),
            ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}}),
        ]
    )
    for cut in range(0, len(stream), 17):  # arriving in arbitrary pieces
        counter.feed(stream[cut : cut + 17])
    assert (counter.count, counter.total) == (5, 17)


def test_a_responses_stream_is_counted_from_response_completed() -> None:
    counter = StreamTokens()
    counter.feed(
        sse(
            [
                ("response.created", {"type": "response.created", "response": {"usage": None}}),
                (
                    "response.completed",
                    {
                        "type": "response.completed",
                        "response": {"usage": {"input_tokens": 8, "output_tokens": 2, "total_tokens": 10}},
                    },
                ),
            ]
        )
    )
    assert (counter.count, counter.total) == (2, 10)


def test_a_native_completion_stream_counts_its_final_event_or_else_its_pieces() -> None:
    pieces = [("", {"content": "a", "stop": False}), ("", {"content": "b", "stop": False})]
    cut_short = StreamTokens()
    cut_short.feed(sse(pieces))
    assert (cut_short.count, cut_short.total) == (2, 2)
    whole = StreamTokens()
    whole.feed(
        sse([*pieces, ("", {"content": "", "stop": True, "tokens_evaluated": 4, "tokens_predicted": 2})])
    )
    assert (whole.count, whole.total) == (2, 6)


def test_an_openai_stream_counts_its_usage_chunk_and_ignores_done() -> None:
    counter = StreamTokens()
    chunk = {"choices": [{"delta": {"content": "x"}}]}
    counter.feed(
        sse(
            [
                ("", chunk),
                ("", chunk),
                ("", {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
            ]
        )
    )
    counter.feed(b"data: [DONE]\n\n")
    assert (counter.count, counter.total) == (2, 5)
