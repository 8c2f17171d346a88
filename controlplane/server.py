"""The control-plane process: state, desired-state source, reconciler and the gRPC server, under one stop."""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import CollectorRegistry, start_http_server

from controlplane.agents.servicer import AgentServicer
from controlplane.api.servicer import ClusterServicer
from controlplane.desired.model_file import ModelFileSource
from controlplane.metrics import ControlPlaneMetrics
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.scheduler.profile import load_profile
from controlplane.settings import ControlPlaneSettings
from controlplane.state.cluster import ClusterState
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: ControlPlaneSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.state = ClusterState()
        self.registry = registry or CollectorRegistry()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(self.state, settings.status_interval_s), server
        )
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(self.state, stop), server)
        bound = server.add_insecure_port(settings.address)
        if bound == 0:
            raise OSError(f"cannot bind the control plane's gRPC port {settings.address} (in use?)")
        await server.start()
        log.info("control plane listening for agents and gateways on %s", settings.address)
        metrics = ControlPlaneMetrics(self.registry)
        if settings.metrics_port:
            start_http_server(settings.metrics_port, registry=self.registry)
        scheduler = Scheduler(load_profile(settings.scheduler_profile), metrics)
        reconciler = Reconciler(self.state, scheduler, settings.node_grace_s)
        try:
            async with asyncio.TaskGroup() as group:
                if settings.models is not None:
                    group.create_task(
                        ModelFileSource(settings.models, self.state).run(stop), name="models-file"
                    )
                else:
                    log.warning("no --models file: the control plane has no desired models")
                group.create_task(reconciler.run(stop), name="reconciler")
        finally:
            # Give streams a moment to end cleanly; agents reconnect to the next control plane.
            await server.stop(grace=2.0)
