"""The endpoint picker's gRPC server: ext_proc (ext_proc.py) and gRPC health, as GIE's protocol asks.

Health services: ``liveness`` (SERVING while the process answers), ``readiness``, the ext_proc
service's own name and "" (SERVING once the gateway has a routing table: until then every pick
would be a 503). Plaintext: the picker sits beside the data plane inside the cluster, as GIE's
reference picker runs without ``--secure-serving``; put a NetworkPolicy in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.domain import RoutingTable
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.picker.ext_proc import EndpointPicker
from llamafleet.core.grpc_channels import SERVER_OPTIONS

log = logging.getLogger(__name__)

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
READY_SERVICES = ("readiness", EXT_PROC_SERVICE, "")
CHECK_S = 1.0  # how often readiness follows the routing table
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def serve_picker(
    host: str,
    port: int,
    table: Callable[[], RoutingTable],
    ready: Callable[[], bool],
    balancer: Balancer,
    metrics: GatewayMetrics,
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop``; a port that cannot be bound fails at once with what to change."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(
        EndpointPicker(table, balancer, metrics, ready), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = 0
    for each in host.split(","):
        address = f"[{each}]:{port}" if ":" in each else f"{each}:{port}"
        with contextlib.suppress(RuntimeError):
            bound += server.add_insecure_port(address) > 0
    if not bound:
        raise OSError(
            f"cannot listen for the endpoint picker on {host}:{port} (in use?); pick another --picker-port"
        )
    await health_servicer.set("liveness", SERVING)
    await server.start()
    log.info(
        "endpoint picker (Gateway API Inference Extension, Envoy ext_proc) listening on %s:%d", host, port
    )
    serving: bool | None = None
    try:
        while not stop.is_set():
            if ready() != serving:
                serving = ready()
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if serving
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for service in READY_SERVICES:
                    await health_servicer.set(service, status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_S)
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=5)
