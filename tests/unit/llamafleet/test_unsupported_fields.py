"""OpenAI parameters the server does not honour are refused by name unless they ask for the default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llamafleet.protocol.openai import UNSUPPORTED, ChatCompletionRequest, CompletionRequest

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

ASKING = {
    "functions": [{"name": "f"}],
    "function_call": "auto",
    "best_of": 2,
    "suffix": "end",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy"},
    "web_search_options": {},
    "reasoning_effort": "low",
}
DEFAULTS = {
    "functions": None, "function_call": "none",
    "best_of": 1,
    "suffix": "", "modalities": ["text"],
}  # fmt: skip


def test_every_unsupported_field_has_a_case() -> None:
    assert set(ASKING) == set(UNSUPPORTED)


@pytest.mark.parametrize("field", sorted(ASKING))
def test_asking_for_an_unsupported_feature_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(BASE | {field: ASKING[field]})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert "not supported" in error["msg"]


def test_default_values_pass_as_sdks_send_them() -> None:
    request = ChatCompletionRequest.model_validate(BASE | DEFAULTS)
    assert request.model == "m"
    completion = CompletionRequest.model_validate(
        {"model": "m", "prompt": "p", "logprobs": 0, "suffix": None}
    )
    assert completion.prompt == "p"
