"""The node agent: probes hardware, then runs the supervisor and the control-plane uplink until stopped."""

from __future__ import annotations

import asyncio
import logging
import sys

from prometheus_client import CollectorRegistry, start_http_server

from nodeagent.cache.resolver import installed_builtins
from nodeagent.domain import CachedModel
from nodeagent.hardware import inventory
from nodeagent.metrics import AgentMetrics
from nodeagent.settings import AgentSettings
from nodeagent.supervisor.supervisor import Supervisor
from nodeagent.uplink.client import Uplink

log = logging.getLogger(__name__)


def cached_models() -> list[CachedModel]:
    return [CachedModel(source, str(path), path.stat().st_size) for source, path in installed_builtins()]


class Agent:
    def __init__(self, settings: AgentSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = AgentMetrics(registry)
        self._registry = registry

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        host = await inventory.collect(sys.executable)
        devices = ", ".join(f"{d.name} ({d.description})" for d in host.devices)
        log.info(
            "node %s: %s, %d cores, %.1f GiB RAM; llama.cpp devices: %s",
            settings.node_id, host.cpu_model, host.cpu_logical_cores, host.ram_total_bytes / 2**30, devices,
        )  # fmt: skip
        if settings.metrics_port:
            start_http_server(settings.metrics_port, registry=self._registry)
        changed = asyncio.Event()
        supervisor = Supervisor(
            settings.supervisor,
            on_change=changed.set,
            on_restart=lambda model: self.metrics.engine_restarts.labels(model).inc(),
        )
        uplink = Uplink(settings, host, supervisor, changed, self.metrics, cached_models)
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run(stop), name="supervisor")
            group.create_task(uplink.run(stop), name="uplink")
