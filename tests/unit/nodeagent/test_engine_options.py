"""Engine command-line details: adapters given at start, request → sampling parameters."""

from __future__ import annotations

import pytest

from llamafleet.contract.replica import AdapterSpec
from llamafleet.protocol.openai import CompletionRequest
from nodeagent.engine.__main__ import parse_adapter
from nodeagent.engine.core import sampling_params
from nodeagent.engine.sampling import SamplingParams


def test_adapters_parse_with_and_without_a_scale() -> None:
    assert parse_adapter("tone=/m/tone.gguf") == AdapterSpec("tone", "/m/tone.gguf", 1.0)
    assert parse_adapter("tone=/m/a@b/tone.gguf@0.5") == AdapterSpec("tone", "/m/a@b/tone.gguf", 0.5)
    with pytest.raises(SystemExit, match="NAME=PATH"):
        parse_adapter("no-path")
    with pytest.raises(SystemExit, match="not a number"):
        parse_adapter("x=/p@high")


def test_unset_fields_keep_llama_server_defaults_and_ignore_eos_bans_eog_tokens() -> None:
    request = CompletionRequest(model="m", prompt="x", temperature=0.0, top_k=5, logit_bias={"7": 2.5})
    params = sampling_params(request, eog_tokens=[2, 3])
    assert params.temperature == 0.0
    assert params.top_k == 5
    assert params.top_p == SamplingParams().top_p
    assert params.logit_bias == {7: 2.5}
    banned = sampling_params(CompletionRequest(model="m", prompt="x", ignore_eos=True), eog_tokens=[2, 3])
    assert banned.logit_bias == {2: float("-inf"), 3: float("-inf")}


def test_model_names_select_adapters() -> None:
    request = CompletionRequest(model="smol:tone", prompt="x", lora=[{"name": "extra", "scale": 0.5}])
    assert request.adapter_choices("smol") == [("tone", None), ("extra", 0.5)]
    assert CompletionRequest(model="smol", prompt="x").adapter_choices("smol") == []
