"""Layer splitting through llama.cpp's RPC backend (issue 14, first part): a worker process hosts layers
0..14 of SmolLM2, the head engine the rest and the output, and greedy completions equal the unsplit ones."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.engine import running_engine
from tests.support.ports import server_port
from tests.support.rpc import PROMPTS, greedy, rpc_worker
from tests.support.synthetic_gguf import gemma3_path

pytestmark = pytest.mark.integration


def test_a_split_model_answers_token_for_token_like_the_whole_one(tmp_path: Path, smollm2_path: Path) -> None:
    with running_engine(smollm2_path, tmp_path, "--n-threads", "1") as whole:
        expected = [greedy(whole.url, p) for p in PROMPTS]
    assert all(text.strip() for text in expected)
    with (
        rpc_worker(tmp_path) as (endpoint, _),
        running_engine(smollm2_path, tmp_path, "--n-threads", "1", "--rpc-parts", f"{endpoint}=0-14") as head,
    ):
        assert [greedy(head.url, p) for p in PROMPTS] == expected
        assert f"layers 0-14 on {endpoint}" in head.log()


@pytest.mark.skipif(gemma3_path() is None, reason="gemma3-270m (a dev dependency) is not installed")
def test_sliding_window_layers_split_exactly_when_no_side_repacks(tmp_path: Path) -> None:
    """gemma3 (Q4_K, sliding-window layers) split over a worker equals the whole model on every prompt
    once the head, like the worker, does not repack Q4_K for AVX2; with repacking the whole model's
    greedy path flips on a near-tie (docs/SPLIT.md)."""
    gemma3 = gemma3_path()
    assert gemma3 is not None
    flags = ("--n-threads", "1", "--no-cpu-repack")
    with running_engine(gemma3, tmp_path, *flags, name="gemma3") as whole:
        expected = [greedy(whole.url, p, "gemma3") for p in PROMPTS]
    with (
        rpc_worker(tmp_path) as (endpoint, _),
        running_engine(gemma3, tmp_path, *flags, "--rpc-parts", f"{endpoint}=0-8", name="gemma3") as head,
    ):
        assert [greedy(head.url, p, "gemma3") for p in PROMPTS] == expected


def test_the_worker_refuses_all_interfaces_and_says_why_it_cannot_start(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "nodeagent.rpc", "--host", "0.0.0.0", "--port", "1",
         "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "refusing to listen on all interfaces" in refused.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run(
            [sys.executable, "-m", "nodeagent.rpc", "--host", "127.0.0.1", "--port", str(port),
             "--cache-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        f"nodeagent.rpc: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_bad_parts_are_refused_before_loading(tmp_path: Path, smollm2_path: Path) -> None:
    gap = subprocess.run(
        [sys.executable, "-m", "nodeagent.engine", "--model-path", str(smollm2_path), "--port",
         str(server_port()), "--rpc-parts", "127.0.0.1:1=3-9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gap.returncode == 3
    assert "remote parts must cover layers from 0 without gaps" in gap.stderr
    # llama.cpp would abort (SIGABRT) on a worker it cannot connect to: the engine says it instead.
    away = subprocess.run(
        [sys.executable, "-m", "nodeagent.engine", "--model-path", str(smollm2_path), "--port",
         str(server_port()), "--rpc-parts", f"127.0.0.1:{server_port()}=0-14"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert away.returncode == 3, away.stderr
    assert "cannot reach the RPC worker at 127.0.0.1:" in away.stderr


def stream_until_cut(url: str) -> tuple[int, float, str]:
    """Stream a long greedy completion; returns (chunks received, seconds, how it ended)."""
    import httpx

    body = {"model": "smollm2", "prompt": "Tell me a long story.", "max_tokens": 4000, "temperature": 0,
            "ignore_eos": True, "stream": True}  # fmt: skip
    started, chunks = time.monotonic(), 0
    try:
        with oneshot.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                chunks += line.startswith("data: {")
        ending = "finished"
    except httpx.HTTPError as exc:
        ending = type(exc).__name__
    return chunks, time.monotonic() - started, ending


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGSTOP, 4), (signal.SIGKILL, -signal.SIGABRT)])
def test_a_lost_worker_ends_the_head_promptly_and_the_client_gets_an_error(
    tmp_path: Path, smollm2_path: Path, sig: int, exit_code: int
) -> None:
    """A stopped worker would hang llama.cpp forever (no socket timeouts): the decode watchdog ends the
    engine; a killed one makes llama.cpp abort. Either way the stream ends with an error, promptly."""
    with (
        rpc_worker(tmp_path) as (endpoint, worker),
        running_engine(
            smollm2_path,
            tmp_path,
            "--n-threads",
            "1",
            "--rpc-parts",
            f"{endpoint}=0-14",
            "--decode-timeout-s",
            "3",
        ) as head,
    ):
        timer = threading.Timer(1.5, lambda: worker.send_signal(sig))
        timer.start()
        chunks, seconds, ending = stream_until_cut(head.url)
        timer.join()
        assert chunks > 10, "the stream should have been flowing before the worker was lost"
        assert ending != "finished"
        assert seconds < 1.5 + 3 + 10
        assert head.process.wait(timeout=15) == exit_code, head.log()
        if sig == signal.SIGSTOP:
            assert "a decode step has run for over 3s" in head.log()
            worker.send_signal(signal.SIGCONT)
