"""A small cluster of separate processes for fault tests: a control plane, agents and a gateway,
each a real `llamafleet …` process that a test can kill, stop or restart on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from controlplane.domain import Endpoint
from tests.support import oneshot
from tests.support.ports import server_port
from tests.support.processes import (
    Proc,
    admin_client,
    agent_args,
    controlplane_args,
    engine_pids,
    gateway_args,
    grpc_port,
)

MODEL = "smol"


def engine_endpoint(controlplane: str, tmp: Path) -> Endpoint:
    """The first ready engine of the only model (its URL and secret), from the routing table that
    gateways get; an admin credential may read it too."""

    async def fetch() -> Endpoint:
        client = admin_client(controlplane, tmp)
        try:
            async for table in client.watch_routes("tests"):
                (route,) = table.models.values()
                ready = [e for e in route.endpoints if e.ready]
                if ready:
                    return ready[0]
        finally:
            await client.close()
        raise AssertionError("the routing table stream ended")

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
            data = oneshot.get(f"{self.base}/v1/models", timeout=2).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return 0
        return int(data[0]["llamafleet"]["ready_replicas"]) if data else 0

    def serving_on(self) -> str:
        """The node whose agent runs the model's engine ('' while none is ready)."""
        if not self.ready_replicas():
            return ""
        return next((n for n, agent in self.agents.items() if agent.alive() and engine_pids(agent)), "")

    def restart_gateway(self) -> None:
        args = gateway_args(self.address, self.gw_port, self.tmp)
        self.gateway = Proc("gateway", args, self.tmp / "gw.log").start()


@contextlib.contextmanager
def processes(
    tmp: Path, nodes: tuple[str, ...] = ("node-a", "node-b"), *cp_flags: str
) -> Iterator[Processes]:
    models = tmp / "models.yaml"
    models.write_text(
        f"models:\n  - name: {MODEL}\n    source: builtin:smollm2-135m\n    replicas: 1\n"
        "    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n"
    )
    port, gw_port = grpc_port(), server_port()
    address = f"127.0.0.1:{port}"
    cp_args = controlplane_args(tmp, port, "--models", str(models), "--status-interval-s", "1",
                                "--settle-s", "2", *cp_flags)  # fmt: skip
    controlplane = Proc("controlplane", cp_args, tmp / "cp.log").start()
    agents = {n: Proc(n, agent_args(tmp, address, n), tmp / f"{n}.log").start() for n in nodes}
    gateway = Proc("gateway", gateway_args(address, gw_port, tmp), tmp / "gw.log").start()
    running = Processes(tmp, address, f"http://127.0.0.1:{gw_port}", gw_port, controlplane, agents, gateway)
    try:
        yield running
    finally:
        for proc in (running.gateway, *running.agents.values(), running.controlplane):
            if proc.alive():
                proc.stop()
