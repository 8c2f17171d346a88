"""The node agent: probes hardware, then runs the supervisor and the control-plane uplink until stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, start_http_server

from llamafleet.fit.recommend import Gpu, NodeResources
from llamafleet.http.probes import serve_probes
from llamafleet.units.sizes import parse_size
from nodeagent import engine_scrape
from nodeagent.cache.catalog import ModelCatalog
from nodeagent.cache.node_store import node_store
from nodeagent.cache.prefetch import Prefetcher
from nodeagent.domain import CachedModel, CpuBudget, HostInventory
from nodeagent.hardware import cgroups, cpus, inventory
from nodeagent.memory import HostMemory
from nodeagent.metrics import AgentMetrics
from nodeagent.settings import AgentSettings
from nodeagent.supervisor.supervisor import Supervisor
from nodeagent.uplink.client import Uplink
from nodeagent.uplink.identity import NodeIdentity

log = logging.getLogger(__name__)


def node_resources(node_id: str, host: HostInventory, memory: HostMemory) -> NodeResources:
    """What this node offers a model now: available RAM, its GPUs, the CPU features llama.cpp uses."""
    gpus = tuple(
        Gpu(d.name, d.memory_free_bytes, d.memory_total_bytes) for d in host.devices if d.kind == "gpu"
    )
    return NodeResources(node_id, memory.available(), gpus, host.cpu_flags)


def allocatable_cpus(host: HostInventory, settings: AgentSettings) -> CpuBudget:
    """The node's CPU budget, capped by --allocatable-cpus as a kubelet's allocatable caps a node's."""
    found = host.cpus or cpus.detect()
    if settings.allocatable_cpus and settings.allocatable_cpus < found.usable:
        return dataclasses.replace(found, usable=settings.allocatable_cpus)
    return found


class Agent:
    def __init__(self, settings: AgentSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = AgentMetrics(registry)
        self._registry = registry

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        host = await inventory.collect(sys.executable)
        supervisor_ref: list[Supervisor] = []  # the engines' pids count against --allocatable-memory
        memory = HostMemory(
            parse_size(settings.allocatable_memory) if settings.allocatable_memory else 0,
            lambda: [s.pid for sup in supervisor_ref for s in sup.states() if s.pid],
            cgroups.memory_limit_bytes(),
            lambda: sum(sup.memory_to_come() for sup in supervisor_ref),
        )
        ram = memory.describe(host.ram_total_bytes)
        host = dataclasses.replace(host, ram_total_bytes=memory.total(host.ram_total_bytes),
                                   ram_free_bytes=memory.available(),
                                   cpus=allocatable_cpus(host, settings))  # fmt: skip
        devices = ", ".join(f"{d.name} ({d.description})" for d in host.devices)
        log.info(
            "node %s: %s, usable CPUs %s, RAM %s; llama.cpp devices: %s", settings.node_id,
            host.cpu_model, host.cpus.describe() if host.cpus else "?", ram, devices,
        )  # fmt: skip
        if settings.metrics_port:
            start_http_server(settings.metrics_port, registry=self._registry)
        changed = asyncio.Event()
        identity = None if settings.uplink.insecure else NodeIdentity(settings)
        # Files replicas on this node use or start with, and files to prefetch, are never evicted.
        uplink_ref: list[Uplink] = []

        def in_use() -> list[str]:
            running = [st.spec.source for sup in supervisor_ref for st in sup.states()]
            return running + [s for up in uplink_ref for s in up.prefetch]

        store = node_store(settings.supervisor, in_use)
        supervisor = Supervisor(
            settings.supervisor,
            on_change=changed.set,
            on_restart=lambda model: self.metrics.engine_restarts.labels(model).inc(),
            credentials=identity.credentials() if identity is not None else None,
            store=store,
            cpus=host.cpus.usable if host.cpus else 1,
            gpus=any(d.kind == "gpu" for d in host.devices),
        )
        supervisor_ref.append(supervisor)
        catalog = ModelCatalog(store.cached)

        def cached_models() -> list[CachedModel]:
            sources = {state.spec.source for state in supervisor.states()} | uplink.watched_sources
            return catalog.cached_models(sources, node_resources(settings.node_id, host, memory))

        uplink = Uplink(
            settings, host, supervisor, changed, self.metrics, cached_models, memory.available, identity
        )
        uplink_ref.append(uplink)
        prefetcher = Prefetcher(
            store,
            lambda: uplink.prefetch,
            uplink.prefetch_changed,
            lambda s: uplink.prefetch_sha256.get(s, ""),
        )

        def readiness() -> tuple[bool, dict[str, object]]:
            return uplink.connected, {"node": settings.node_id, "replicas": len(supervisor.states())}

        def engine_routes(app: FastAPI) -> None:
            @app.get("/metrics/engines")
            async def engines() -> Response:
                return Response(
                    await engine_scrape.gather(supervisor.states()), media_type=CONTENT_TYPE_LATEST
                )

        # The uplink outlives the supervisor: while engines drain on the way out, the control plane
        # hears that they are stopping and takes them out of the routing table first.
        supervised = asyncio.Event()

        async def supervise() -> None:
            try:
                await supervisor.run(stop)
            finally:
                supervised.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(supervise(), name="supervisor")
            group.create_task(uplink.run(supervised), name="uplink")
            group.create_task(prefetcher.run(stop), name="prefetch")
            if settings.http_port:
                group.create_task(
                    serve_probes("llamafleet node agent", settings.http_host, settings.http_port, stop,
                                 readiness, self._registry, engine_routes),
                    name="probes",
                )  # fmt: skip
