"""Client strings and numbers that reach labels, logs or the engine are bounded by the request schemas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llamafleet.protocol.openai import LORA_MAX, MODEL_NAME_MAX, ChatCompletionRequest, CompletionRequest
from llamafleet.protocol.rerank import RerankRequest

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


def test_a_model_name_longer_than_the_cap_is_refused_everywhere() -> None:
    ChatCompletionRequest.model_validate({**CHAT, "model": "m" * MODEL_NAME_MAX})
    for kind, body in ((ChatCompletionRequest, CHAT), (CompletionRequest, {"prompt": "Hi"}),
                       (RerankRequest, {"query": "q", "documents": ["d"]})):  # fmt: skip
        with pytest.raises(ValidationError, match="model"):
            kind.model_validate({**body, "model": "m" * (MODEL_NAME_MAX + 1)})


@pytest.mark.parametrize(
    "lora",
    [
        [{"name": "a", "scale": float("nan")}],
        [{"name": "a", "scale": float("inf")}],
        [{"name": "a", "scale": 1e6}],
        [{"name": f"a{i}"} for i in range(LORA_MAX + 1)],
        [{"name": "a" * (MODEL_NAME_MAX + 1)}],
    ],
)
def test_lora_choices_are_bounded(lora: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError, match="lora"):
        ChatCompletionRequest.model_validate({**CHAT, "lora": lora})


def test_ordinary_lora_choices_pass() -> None:
    body = ChatCompletionRequest.model_validate(
        {**CHAT, "lora": [{"name": "tone", "scale": -0.5}, {"name": "b"}]}
    )
    assert [c.name for c in body.lora or []] == ["tone", "b"]
