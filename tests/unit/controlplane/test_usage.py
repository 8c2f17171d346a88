"""Token counts read from every dialect's answers and streams, each by its own rules (llamafleet/protocol/:
quotas and token metrics depend on them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.gateway.usage import StreamTokens
from llamafleet.protocol.endpoint import Tokens
from llamafleet.protocol.endpoints import BY_PATH


@pytest.mark.parametrize(
    ("path", "answer", "prompt", "completion"),
    [
        (
            "/v1/chat/completions",
            {"usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}},
            7,
            5,
        ),
        ("/v1/embeddings", {"usage": {"prompt_tokens": 9, "total_tokens": 9}}, 9, 0),
        ("/v1/rerank", {"results": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}}, 5, 0),
        ("/v1/responses", {"usage": {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}}, 11, 4),
        ("/v1/messages", {"type": "message", "usage": {"input_tokens": 6, "output_tokens": 3}}, 6, 3),
        ("/completion", {"content": "hi", "stop": True, "tokens_evaluated": 4, "tokens_predicted": 8}, 4, 8),
        (
            "/completion",
            [
                {"stop": True, "tokens_evaluated": 2, "tokens_predicted": 3},
                {"stop": True, "tokens_evaluated": 4, "tokens_predicted": 3},
            ],
            6,
            6,
        ),  # /completion, two prompts
    ],
)
def test_whole_answers_of_every_api_are_counted(path: str, answer: Any, prompt: int, completion: int) -> None:
    assert BY_PATH[path].usage(answer) == Tokens(prompt, completion)


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize", "/apply-template", "/v1/messages/count_tokens"])
def test_endpoints_that_run_no_model_charge_nothing(path: str) -> None:
    assert BY_PATH[path].usage({"usage": {"prompt_tokens": 3}, "tokens": [1, 2]}) is None


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        (f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(e).encode() + b"\n\n"
        for name, e in events
    )


def test_an_anthropic_stream_counts_input_from_its_start_and_output_from_its_delta() -> None:
    counter = StreamTokens(BY_PATH["/v1/messages"])
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
    counter = StreamTokens(BY_PATH["/v1/responses"])
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
    cut_short = StreamTokens(BY_PATH["/completion"])
    cut_short.feed(sse(pieces))
    assert (cut_short.count, cut_short.total) == (2, 2)
    whole = StreamTokens(BY_PATH["/completion"])
    whole.feed(
        sse([*pieces, ("", {"content": "", "stop": True, "tokens_evaluated": 4, "tokens_predicted": 2})])
    )
    assert (whole.count, whole.total) == (2, 6)


def test_an_openai_stream_counts_its_usage_chunk_and_ignores_done() -> None:
    counter = StreamTokens(BY_PATH["/v1/chat/completions"])
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


@pytest.mark.parametrize(
    ("path", "piece"),
    [
        ("/v1/chat/completions", ("", {"choices": [{"delta": {"content": "x"}}]})),
        ("/v1/completions", ("", {"choices": [{"text": "x"}]})),
        (
            "/v1/responses",
            ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"}),
        ),
        (
            "/v1/messages",
            ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta"}}),
        ),
    ],
)
def test_a_stream_cut_short_is_charged_one_token_per_piece_in_every_dialect(
    path: str, piece: tuple[str, dict[str, Any]]
) -> None:
    counter = StreamTokens(BY_PATH[path])
    counter.feed(sse([piece, piece, piece]))
    assert (counter.count, counter.total) == (3, 3)
