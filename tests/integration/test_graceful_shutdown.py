"""SIGTERM stops new work and lets what is in flight finish: an engine alone, and a whole cluster
(gateway, agent, engine) with a stream going through the gateway."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import start_cluster
from tests.support.engine import running_engine

pytestmark = pytest.mark.integration

# The stream in flight at SIGTERM lasts this long at the speed measured just before: longer than the 5 s
# uvicorn gave before, well inside the engine's 13 s grace, on a machine of any speed.
STREAM_S = 7.0


def tokens_lasting(url: str, model: str, seconds: float) -> int:
    """How many tokens this model generates in ``seconds`` here and now (one 32-token request timed)."""
    body = {
        "model": model,
        "prompt": "Once upon a time",
        "max_tokens": 32,
        "temperature": 0,
        "ignore_eos": True,
    }
    started = time.monotonic()
    response = oneshot.post(f"{url}/v1/completions", json=body, timeout=120)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    return max(20, int(response.json()["usage"]["completion_tokens"] / elapsed * seconds))


def stream_with_sigterm(
    url: str, model: str, on_tokens: int, terminate: Callable[[], None], tokens: int
) -> tuple[int, str, str]:
    """Stream ``tokens`` tokens; after ``on_tokens`` chunks call ``terminate``. (chunks, finish, end)."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}  # fmt: skip
    chunks, finish, end = 0, "", "cut"
    with oneshot.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "data: [DONE]":
                end = "done"
            elif line.startswith("data: {"):
                chunks += 1
                finish = json.loads(line.removeprefix("data: "))["choices"][0]["finish_reason"] or finish
                if chunks == on_tokens:
                    threading.Thread(target=terminate, daemon=True).start()
    return chunks, finish, end


def refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except OSError:
        return True


def test_an_engine_finishes_its_streams_on_sigterm_and_takes_no_new_work(
    tmp_path: Path, smollm2_path: Path
) -> None:
    # A grace far beyond the stream: what is tested is that the stream in flight finishes (longer than
    # uvicorn's 5 s), not how fast this machine is while other work shares it.
    flags = ("--n-threads", "1", "--parallel-slots", "1", "--shutdown-grace-s", "60")
    with running_engine(smollm2_path, tmp_path, *flags) as engine:
        refused_during: list[bool] = []

        def terminate() -> None:
            engine.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            refused_during.append(refuses(engine.url))  # the listener is closed at once

        tokens = tokens_lasting(engine.url, "smollm2", STREAM_S)
        chunks, finish, end = stream_with_sigterm(engine.url, "smollm2", 5, terminate, tokens)
        assert (end, finish) == ("done", "length")
        assert chunks >= tokens  # every token of the stream that was in flight
        assert refused_during == [True]
        assert engine.process.wait(timeout=30) == 0


def test_sigterm_on_a_cluster_lets_a_stream_through_the_gateway_finish(tmp_path: Path) -> None:
    models = "models:\n  - name: smollm2-135m\n    source: builtin:smollm2-135m\n    parallelSlots: 1\n"
    cluster = start_cluster(tmp_path, models, ["smollm2-135m"])
    try:
        tokens = tokens_lasting(cluster.base_url, "smollm2-135m", STREAM_S)
        chunks, finish, end = stream_with_sigterm(
            cluster.base_url, "smollm2-135m", 5, lambda: cluster.process.send_signal(signal.SIGTERM), tokens
        )
        assert (end, finish) == ("done", "length"), cluster.log()[-3000:]
        assert chunks >= tokens
        assert cluster.process.wait(timeout=40) == 0
        log = cluster.log()
        assert "draining" in log or "stopping" in log
    finally:
        if cluster.process.poll() is None:
            cluster.process.kill()
            cluster.process.wait()
