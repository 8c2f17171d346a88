"""A llama.cpp RPC worker, and a split's gate and tunnel as the agents run them, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nodeagent.rpc.tunnel import HeadTunnel, WorkerGate
from tests.support import oneshot
from tests.support.ports import server_port
from tests.support.wait import wait_until


@contextmanager
def rpc_worker(
    tmp: Path, *extra: str, host: str = "127.0.0.1"
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = server_port()
    log = (tmp / f"rpc-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "nodeagent.rpc", "--host", host, "--port", str(port), "--cache-dir",
         str(tmp / "rpc-cache"), "--threads", "1", *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the RPC worker exited: {(tmp / f'rpc-{port}.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(listening, 30, "the RPC worker to listen")
        yield f"127.0.0.1:{port}", process
    finally:
        process.kill()
        process.wait()
        log.close()


@contextlib.contextmanager
def serving(gate: WorkerGate, gate_port: int, tunnel: HeadTunnel, tunnel_port: int) -> Iterator[None]:
    """Gate and tunnel on their own event loop in a thread, as they run inside the agents."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        up = asyncio.Event()
        tasks = [asyncio.create_task(gate.serve("127.0.0.1", gate_port, stop)),
                 asyncio.create_task(tunnel.serve(tunnel_port, stop, up))]  # fmt: skip
        await up.wait()
        await asyncio.sleep(0.2)
        ready.set()
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "gate and tunnel did not start"
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


def greedy(url: str, prompt: str, model: str = "smollm2") -> str:

    body = {"model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    response = oneshot.post(f"{url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["text"]
    return text
