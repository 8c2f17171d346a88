"""`llamafleet up`: control plane, gateway and one node agent in one process, on localhost.

They talk to each other exactly as in a cluster (gRPC streams, HTTP to the engine processes);
only the processes are shared. Ctrl-C stops the engines, then everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys

from prometheus_client import CollectorRegistry

from controlplane.gateway.server import Gateway
from controlplane.server import ControlPlane
from controlplane.state import views
from llamafleet.cli.settings import UpSettings
from llamafleet.core.lifecycle import install_stop_signals, run_until_stopped
from llamafleet.security import pki
from nodeagent.agent import Agent

SHUTDOWN_GRACE_S = 20.0


def banner(settings: UpSettings, models: list[str]) -> str:
    first = settings.gateway.host.split(",")[0].strip()
    host = "127.0.0.1" if first in ("0.0.0.0", "::") else (f"[{first}]" if ":" in first else first)
    base = f"http://{host}:{settings.gateway.port}/v1"
    # max_tokens: a 135M model sampled at temperature 0.8 sometimes rambles to the end of its context.
    body = json.dumps(
        {
            "model": models[0] if models else "MODEL",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        }
    )
    auth = (
        f" -H {shlex.quote('Authorization: Bearer ' + settings.gateway.api_keys[0])}"
        if settings.gateway.api_keys
        else ""
    )
    return "\n".join(
        [
            "",
            f"llamafleet is up: serving {', '.join(models) or 'no models'}",
            f"  OpenAI base URL:  {base}",
            "  Try:",
            f"    curl {base}/chat/completions -H 'Content-Type: application/json'{auth} \\",
            f"      -d {shlex.quote(body)}",
            "  Inspect:  llamafleet models   ·   llamafleet nodes   ·   curl " + base + "/models",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


async def _announce_when_ready(cp: ControlPlane, settings: UpSettings, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.ready_timeout_s
    seen = -1
    while not stop.is_set():
        table = views.routing_table(cp.state)
        if table.models and all(table.ready_endpoints(m) for m in table.models):
            print(banner(settings, sorted(table.models)), flush=True)
            return
        if loop.time() > deadline:
            print(
                f"\nllamafleet: not every model is ready after {settings.ready_timeout_s:.0f}s; "
                "`llamafleet models` shows why. Still running; Ctrl-C to stop.\n",
                file=sys.stderr,
                flush=True,
            )
            return
        with contextlib.suppress(TimeoutError):
            seen = await cp.state.wait_changed(seen, wait_s=1.0)


async def up(settings: UpSettings) -> int:
    settings = settings.wired()
    if not settings.controlplane.insecure and pki.init_pki(settings.controlplane.tls_dir):
        print(f"llamafleet: generated this cluster's CA and credentials in {settings.controlplane.tls_dir}",
              flush=True)  # fmt: skip
    stop = asyncio.Event()
    install_stop_signals(stop)
    registry = CollectorRegistry()  # one process: gateway's /metrics shows agent metrics too
    cp = ControlPlane(settings.controlplane)
    gateway = Gateway(settings.gateway, registry)
    agent = Agent(settings.agent, registry)

    async def announce(stop: asyncio.Event) -> None:
        await _announce_when_ready(cp, settings, stop)

    # The engines stop first, then the control plane: while they drain it still hears that they are
    # stopping (the routing table drops them) and the agent is not told to find another leader.
    agent_done = asyncio.Event()

    async def run_agent(stop: asyncio.Event) -> None:
        try:
            await agent.run(stop)
        finally:
            agent_done.set()

    async def run_controlplane(_: asyncio.Event) -> None:
        await cp.run(agent_done)

    await run_until_stopped(
        {"controlplane": run_controlplane, "gateway": gateway.run, "agent": run_agent, "announce": announce},
        stop,
        SHUTDOWN_GRACE_S,
    )
    return 0
