"""Prompt states saved to host memory (--cache-ram) on the real engine and the real SmolLM2 GGUF.

One slot and two conversations: each new turn of one overwrites the other's cells. With the host
cache the overwritten cells are saved first and restored at the conversation's next turn; the
answers must be the same, to the letter, as an engine that prefills everything again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.engine import running_engine

pytestmark = pytest.mark.integration

HISTORY = {
    "lighthouse": "The keeper of the northern lighthouse wrote in her log every night: the weather, "
    "the ships that passed, the state of the lamp and the lens, and what the gulls were doing. ",
    "orchard": "The orchard on the hill had forty apple trees, six pear trees and one old walnut. "
    "Every autumn the village came to pick, press and store the fruit for the winter. ",
}


def _ask(client: httpx.Client, prompt: str) -> dict[str, Any]:
    body = {"model": "smollm2", "prompt": prompt, "temperature": 0, "max_tokens": 12, "ignore_eos": True}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _converse(client: httpx.Client) -> list[dict[str, Any]]:
    """Three turns of each conversation, alternating, each turn the last prompt, its answer and more."""
    prompts = {name: text * 3 for name, text in HISTORY.items()}
    answers = []
    for turn in range(3):
        for name in HISTORY:
            answer = _ask(client, prompts[name])
            answers.append(answer)
            prompts[name] += answer["choices"][0]["text"] + f" Turn {turn + 2}: "
    return answers


def _cached(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def _metric(metrics: str, name: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_a_conversations_overwritten_cells_are_restored_and_answer_the_same(
    smollm2_path: Path, tmp_path: Path
) -> None:
    flags = ("--parallel-slots", "1", "--context-length", "1024")
    with running_engine(smollm2_path, tmp_path, *flags, "--cache-ram", "0") as off, off.client() as client:
        without = _converse(client)
        off_metrics = client.get("/metrics").text
    with running_engine(smollm2_path, tmp_path, *flags) as on, on.client() as client:  # the default: on
        with_cache = _converse(client)
        metrics = client.get("/metrics").text

    assert [a["choices"][0]["text"] for a in with_cache] == [a["choices"][0]["text"] for a in without]
    # From the second turn on, each conversation's whole last prompt and answer come back from host
    # memory (the one slot held the other conversation); without the cache only the shared
    # beginning (a BOS at most) survives.
    # (Less a token or two where the answer's text, tokenized again with what follows, joins otherwise.)
    for earlier, later in zip(with_cache[:-2], with_cache[2:], strict=True):
        assert _cached(later) >= earlier["usage"]["prompt_tokens"] - 2
    assert all(_cached(a) < 8 for a in without)
    assert _metric(metrics, "llamafleet_engine_prompt_cache_restored_tokens_total") == sum(
        _cached(a) for a in with_cache[2:]
    )
    assert _metric(metrics, "llamafleet_engine_prompt_cache_saved_total") >= 4
    assert 0 < _metric(metrics, "llamafleet_engine_prompt_cache_host_bytes") <= 1024 << 20
    assert _metric(off_metrics, "llamafleet_engine_prompt_cache_host_bytes") == 0


def test_states_larger_than_the_limit_are_not_kept(smollm2_path: Path, tmp_path: Path) -> None:
    # SmolLM2 keeps ~23 KB of cells per token: a 100-token conversation does not fit in 1 MiB.
    flags = ("--parallel-slots", "1", "--context-length", "1024", "--cache-ram", "1")
    with running_engine(smollm2_path, tmp_path, *flags) as engine, engine.client() as client:
        answers = _converse(client)
        metrics = client.get("/metrics").text
    assert all(_cached(a) < 8 for a in answers)
    assert _metric(metrics, "llamafleet_engine_prompt_cache_saved_total") == 0
    assert _metric(metrics, "llamafleet_engine_prompt_cache_host_bytes") == 0


def test_a_state_pushed_out_while_it_is_restored_still_serves_its_request(
    smollm2_path: Path, tmp_path: Path
) -> None:
    """Room for one state (4 MiB): restoring a conversation's state first saves the slot's other
    conversation, which pushed the one being restored out of the cache. Before, that was a KeyError
    in the batcher and the request was lost (its client waited forever: the cluster benchmark's
    timeouts); now it is served from the state in hand."""
    flags = ("--parallel-slots", "1", "--context-length", "1024")
    with running_engine(smollm2_path, tmp_path, *flags, "--cache-ram", "0") as off, off.client() as client:
        without = _converse(client)
    with running_engine(smollm2_path, tmp_path, *flags, "--cache-ram", "4") as on:
        with on.client(timeout=30) as client:
            with_cache = _converse(client)
        log = on.log()
    assert [a["choices"][0]["text"] for a in with_cache] == [a["choices"][0]["text"] for a in without]
    assert "Traceback" not in log


async def test_the_agent_counts_the_unfilled_part_of_an_engines_cache_as_memory_to_come(
    smollm2_path: Path, tmp_path: Path
) -> None:
    """The engine's /health says what its prompt cache holds; once the replica serves, the agent counts
    the rest of its cap as memory the engine may still take (the node offers that much less), and
    nothing before (the control plane holds it then) or once the replica failed."""
    import asyncio
    import dataclasses

    from llamafleet.contract.replica import ReplicaSpec
    from nodeagent.domain import Phase
    from nodeagent.settings import SupervisorSettings
    from nodeagent.supervisor.replica import EngineReplica
    from nodeagent.supervisor.supervisor import Supervisor

    cap = 64 << 20
    spec = ReplicaSpec("smol-1", "smollm2", str(smollm2_path), cache_ram=cap >> 20)
    settings = SupervisorSettings(data_dir=tmp_path)
    replica = EngineReplica(spec, 1, settings, lambda: None)
    supervisor = Supervisor(settings, lambda: None)
    supervisor._replicas = {"smol-1": replica}  # type: ignore[dict-item]
    flags = ("--parallel-slots", "1", "--context-length", "1024", "--cache-ram", str(cap >> 20))
    with running_engine(smollm2_path, tmp_path, *flags) as engine:
        async with httpx.AsyncClient(timeout=60) as client:
            assert await replica.healthy(client, engine.url, engine.process.pid)
            # starting: the control plane holds the replica's whole need, its cache's cap included
            assert supervisor.memory_to_come() == 0
            replica._state = dataclasses.replace(replica.state, phase=Phase.READY)  # as its supervision does
            assert replica.memory_to_come() == supervisor.memory_to_come() == cap  # nothing saved yet
            with engine.client() as sync_client:
                await asyncio.to_thread(_converse, sync_client)
                metrics = sync_client.get("/metrics").text
            health = (await client.get(f"{engine.url}/health")).json()
            assert await replica.healthy(client, engine.url, engine.process.pid)
    held = health["prompt_cache_bytes"]
    assert held == _metric(metrics, "llamafleet_engine_prompt_cache_host_bytes")
    assert 0 < held <= cap
    assert replica.memory_to_come() == supervisor.memory_to_come() == cap - held
    replica._state = dataclasses.replace(replica.state, phase=Phase.FAILED)
    assert supervisor.memory_to_come() == 0
