"""A small cluster of separate processes for fault tests: a control plane, agents and a gateway,
each a real `llamafleet …` process that a test can kill, stop or restart on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from controlplane.api.client import ClusterClient
from nodeagent.supervisor.process import free_port
from tests.support.processes import Proc, agent_args, engine_pids, gateway_args

MODEL = "smol"


def engine_url(controlplane: str) -> str:
    """The engine URL of the first replica of the only model, as the control plane reports it."""

    async def fetch() -> str:
        client = ClusterClient(controlplane)
        try:
            (model,) = await client.list_models()
        finally:
            await client.close()
        return model.replicas[0].endpoint

    return asyncio.run(fetch())


@dataclass
class Processes:
    tmp: Path
    address: str  # the control plane's gRPC address
    base: str  # the gateway's URL
    gw_port: int
    controlplane: Proc
    agents: dict[str, Proc]
    gateway: Proc

    def ready_replicas(self) -> int:
        try:
            data = httpx.get(f"{self.base}/v1/models", timeout=2).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return 0
        return int(data[0]["llamafleet"]["ready_replicas"]) if data else 0

    def serving_on(self) -> str:
        """The node whose agent runs the model's engine ('' while none is ready)."""
        if not self.ready_replicas():
            return ""
        return next((n for n, agent in self.agents.items() if agent.alive() and engine_pids(agent)), "")

    def restart_gateway(self) -> None:
        self.gateway = Proc("gateway", gateway_args(self.address, self.gw_port), self.tmp / "gw.log").start()


@contextlib.contextmanager
def processes(
    tmp: Path, nodes: tuple[str, ...] = ("node-a", "node-b"), *cp_flags: str
) -> Iterator[Processes]:
    models = tmp / "models.yaml"
    models.write_text(
        f"models:\n  - name: {MODEL}\n    source: builtin:smollm2-135m\n    replicas: 1\n"
        "    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n"
    )
    grpc_port, gw_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    address = f"127.0.0.1:{grpc_port}"
    cp_args = ["controlplane", "--models", str(models), "--grpc-port", str(grpc_port),
               "--status-interval-s", "1", "--settle-s", "2", *cp_flags]  # fmt: skip
    controlplane = Proc("controlplane", cp_args, tmp / "cp.log").start()
    agents = {n: Proc(n, agent_args(tmp, address, n), tmp / f"{n}.log").start() for n in nodes}
    gateway = Proc("gateway", gateway_args(address, gw_port), tmp / "gw.log").start()
    running = Processes(tmp, address, f"http://127.0.0.1:{gw_port}", gw_port, controlplane, agents, gateway)
    try:
        yield running
    finally:
        for proc in (running.gateway, *running.agents.values(), running.controlplane):
            if proc.alive():
                proc.stop()
