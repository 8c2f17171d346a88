"""Retry before the first byte: a routing table that still lists a replica whose port is closed.

That happens for real between an engine's death and the next routing update. The gateway's
proxy and balancer run in this process on a table holding that dead endpoint and a real engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controlplane.api.client import ClusterClient
from controlplane.domain import Endpoint, ModelRoute, RoutingTable
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.balancer.state import InProcessState
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.proxy import REPLICA_HEADER, EngineProxy, Forward
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from tests.support.engine import running_engine
from tests.support.ports import server_port

pytestmark = pytest.mark.integration


async def test_a_closed_port_is_retried_on_another_replica_before_any_byte(
    tmp_path: Path, smollm2_path: Path
) -> None:
    dead = f"http://127.0.0.1:{server_port()}"  # nothing listens there
    with running_engine(smollm2_path, tmp_path, name="smol") as engine:
        routing = RoutingView(ClusterClient("127.0.0.1:1"), "test")
        endpoints = (Endpoint("a-dead", "n1", dead, True), Endpoint("b-live", "n2", engine.url, True))
        routing.table = RoutingTable(
            1, {"smol": ModelRoute("smol", 4, 2048, endpoints, balancer="round-robin")}
        )
        routing.has_table = True
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry)
        proxy = EngineProxy(GatewaySettings(), routing, Balancer(InProcessState(), metrics), metrics)
        body = b'{"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}'
        try:
            response = await proxy.forward(Forward("/v1/chat/completions", "chat", "smol", body, False))
        finally:
            await proxy.close()
        assert response.status_code == 200
        assert response.headers[REPLICA_HEADER] == "b-live"  # round-robin tried a-dead first
        assert registry.get_sample_value("llamafleet_gateway_retries_total", {"model": "smol"}) == 1
        assert registry.get_sample_value("llamafleet_gateway_in_flight_requests", {"replica": "a-dead"}) == 0
