"""The gateway process: routing-table watch plus the HTTP server, under one stop."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from controlplane.api.client import ClusterClient
from controlplane.gateway.access.api_keys import KeyRing
from controlplane.gateway.access.quota import Quotas
from controlplane.gateway.app import create_app
from controlplane.gateway.balancer.balancer import Balancer
from controlplane.gateway.balancer.state import open_state
from controlplane.gateway.load_report import report_load
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.picker.server import serve_picker
from controlplane.gateway.proxy import EngineProxy
from controlplane.gateway.routing import RoutingView
from controlplane.gateway.settings import GatewaySettings
from llamafleet.core import tracing
from llamafleet.http.server import serve_until
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: GatewaySettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        tls = None if settings.insecure else ClientTls(CredentialFiles(settings.tls_dir))
        self.client = ClusterClient(settings.controlplane, tls)
        self.metrics = GatewayMetrics(registry)
        self.routing = RoutingView(self.client, settings.gateway_id, self.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        metrics = self.metrics
        tracing.configure("llamafleet-gateway", {"service.instance.id": settings.gateway_id})
        state = await open_state(settings.redis_url, settings.gateway_id, metrics.redis_up.set)
        balancer = Balancer(
            state, metrics, settings.balancer, settings.queue_limit, settings.queue_timeout_s,
            settings.retry_after_s, settings.affinity_ttl_s, settings.tenant_queue_limit,
            settings.tenant_preemption,
        )  # fmt: skip
        ring = KeyRing(settings.keys_file, settings.api_keys)
        quotas = Quotas(settings.redis_url)
        proxy = EngineProxy(settings, self.routing, balancer, metrics, quotas)
        app = create_app(settings, self.routing, proxy, self.registry, self.client, (ring, quotas, metrics))
        if ring.open:
            log.warning("no API keys (--gateway-keys-file, --gateway-api-keys): every caller may use "
                        "every model and the admin routes; bind to localhost or add keys")  # fmt: skip
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.routing.run(stop), name="routing-watch")
                group.create_task(
                    report_load(self.client, settings.gateway_id, balancer, stop), name="load-report"
                )
                if settings.picker_port:
                    group.create_task(serve_picker(
                        settings.host, settings.picker_port, lambda: self.routing.table,
                        lambda: self.routing.has_table, balancer, metrics, stop,
                    ), name="endpoint-picker")  # fmt: skip
                await serve_until(app, settings.host, settings.port, stop, settings.shutdown_grace_s)
                stop.set()
        finally:
            await proxy.close()
            await quotas.close()
            await state.close()
            await self.client.close()
