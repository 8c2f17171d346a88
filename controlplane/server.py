"""The control-plane process: state, desired-state source, reconciler and the gRPC server, under one stop.

With ``--source kubernetes`` it first wins the leader Lease; only the leader serves agents and
gateways, reconciles and writes status. Every replica is Ready (``/readyz`` 200, its role in the
body), so Deployment rollouts complete and a PodDisruptionBudget allows a disruption; the leader
labels its own pod and the gRPC Service selects that label (controlplane/operator/leader.py).
Losing the Lease ends the process (Kubernetes restarts it as a follower).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import CollectorRegistry, start_http_server

from controlplane.agents.join import Issuer, JoinServicer
from controlplane.agents.servicer import AgentServicer
from controlplane.api.servicer import ClusterServicer
from controlplane.autoscaler.loop import Autoscaler
from controlplane.desired.model_file import ModelFileSource
from controlplane.metrics import ClusterCollector, ControlPlaneMetrics
from controlplane.operator.kube import Kube
from controlplane.operator.leader import LeaderElector
from controlplane.operator.node_facts import KubeNodeFacts
from controlplane.operator.node_keys_configmap import ConfigMapPinStore
from controlplane.operator.operator import ModelOperator
from controlplane.reconciler import Reconciler
from controlplane.scheduler.framework import Scheduler
from controlplane.scheduler.profile import load_profile
from controlplane.settings import ControlPlaneSettings
from controlplane.state.cluster import ClusterState
from controlplane.state.node_addresses import NodeFacts, PeerFacts, port_range
from controlplane.state.node_keys import FilePinStore, NodePins, PinStore
from llamafleet.core.grpc_channels import SERVER_OPTIONS
from llamafleet.http.probes import serve_probes
from llamafleet.security import pki
from llamafleet.security.grpc_tls import CredentialFiles, server_credentials
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: ControlPlaneSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.state = ClusterState(
            settle_s=settings.settle_s,
            engine_ports=port_range(settings.node_engine_ports),
            rpc_ports=port_range(settings.node_rpc_ports),
        )
        self.registry = registry or CollectorRegistry()
        self.serving = False  # gRPC is up and this process acts (the leader, in Kubernetes mode)
        self.role = "starting"
        self.operator: ModelOperator | None = None

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        metrics = ControlPlaneMetrics(self.registry)
        self.registry.register(ClusterCollector(self.state, lambda: self.serving))
        if settings.metrics_port:
            start_http_server(settings.metrics_port, registry=self.registry)
        async with asyncio.TaskGroup() as group:
            if settings.http_port:
                group.create_task(
                    serve_probes("llamafleet control plane", settings.http_host, settings.http_port, stop,
                                 self._readiness, self.registry),
                    name="probes",
                )  # fmt: skip
            if settings.source == "kubernetes":
                await self._lead(stop, metrics)
            else:
                await self._serve(stop, metrics, None)

    async def _lead(self, stop: asyncio.Event, metrics: ControlPlaneMetrics) -> None:
        kube = Kube(self.settings.kubernetes)
        log.info("Kubernetes API at %s", kube.server)
        elector = LeaderElector(kube, self.settings.kubernetes)
        try:
            await elector.mark_pod(False)  # a label left by this pod's previous process, before Ready
            self.role = "follower"
            if not await elector.acquire(stop):
                return
            self.role = "leader"
            self.operator = ModelOperator(kube, self.state, self.settings.kubernetes)
            # Owned here: whichever ends first (a lost Lease, a failure, or a stop) ends the other.
            holder = asyncio.ensure_future(elector.hold(stop))
            facts = KubeNodeFacts(kube, self.settings.kubernetes, self.settings.node_address_check == "peer")
            keys = ConfigMapPinStore(kube, self.settings.kubernetes.lease_namespace,
                                     self.settings.kubernetes.node_keys_configmap)  # fmt: skip
            serving = asyncio.ensure_future(
                self._serve(stop, metrics, self.operator, lambda: elector.mark_pod(True), keys, facts)
            )
            try:
                await asyncio.wait({holder, serving}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.serving = False
                for task in (holder, serving):
                    task.cancel()
                await asyncio.gather(holder, serving, return_exceptions=True)
            for task in (holder, serving):
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            self.serving = False
            await elector.release()
            kube.close()

    async def _serve(
        self,
        stop: asyncio.Event,
        metrics: ControlPlaneMetrics,
        operator: ModelOperator | None,
        listening: Callable[[], Awaitable[None]] | None = None,
        keys: PinStore | None = None,
        facts: KubeNodeFacts | None = None,
    ) -> None:
        settings = self.settings
        issuer = None if settings.insecure else self._pki()
        pins = None
        if issuer is not None:
            pins = NodePins(
                keys or FilePinStore(settings.node_keys_file or settings.tls_dir / "node-keys.json")
            )
            await pins.load()  # before any node is served: a failover keeps every node's key
            self.state.cordoned_ids |= pins.cordoned  # and the drains an operator asked for
        server = grpc.aio.server(options=SERVER_OPTIONS)
        node_facts: NodeFacts = facts or PeerFacts(settings.node_address_check == "peer")
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(
                self.state,
                settings.status_interval_s,
                issuer,
                pins,
                node_facts,
                stop,
            ),
            server,
        )
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(self.state, stop, pins), server)
        servers = [server]
        if issuer is None:
            _bind(server, settings.address, None, "gRPC")
            log.warning("gRPC is plaintext (--insecure): anyone who reaches %s can act as any node",
                        settings.address)  # fmt: skip
        else:
            files = CredentialFiles(settings.tls_dir)
            _bind(server, settings.address, server_credentials(files, require_client_cert=True), "gRPC")
            join = grpc.aio.server(options=SERVER_OPTIONS)
            assert pins is not None
            joins = JoinServicer(self.state, issuer, pins, settings.join_rate_per_minute, node_facts)
            agent_pb2_grpc.add_JoinServiceServicer_to_server(joins, join)
            _bind(join, settings.join_address, server_credentials(files, require_client_cert=False), "join")
            servers.append(join)
        self.state.start_settling()
        for each in servers:
            await each.start()
        self.serving = True
        if listening is not None:
            await listening()  # the leader's label: the gRPC Service routes here from now on
        how = "" if issuer is None else f" (mutual TLS; nodes join on {settings.join_address})"
        log.info("control plane listening for agents and gateways on %s%s", settings.address, how)
        scheduler = Scheduler(load_profile(settings.scheduler_profile), metrics)
        reconciler = Reconciler(self.state, scheduler, settings.node_grace_s)
        try:
            async with asyncio.TaskGroup() as group:
                if operator is not None:
                    group.create_task(operator.run(stop), name="model-operator")
                elif settings.models is not None:
                    group.create_task(
                        ModelFileSource(settings.models, self.state).run(stop), name="models-file"
                    )
                else:
                    log.warning("no --models file: the control plane has no desired models")
                    self.state.set_models([])
                group.create_task(reconciler.run(stop), name="reconciler")
                if facts is not None:
                    group.create_task(facts.run(self.state, stop), name="node-labels")
                group.create_task(Autoscaler(self.state, metrics).run(stop), name="autoscaler")
        finally:
            self.serving = False
            # Give streams a moment to end cleanly; agents reconnect to the next control plane.
            await asyncio.gather(*(each.stop(grace=2.0) for each in servers))

    def _pki(self) -> Issuer:
        """The node-certificate issuer; a first start without a CA generates the cluster's PKI."""
        folder = self.settings.tls_dir
        if pki.init_pki(folder, self.settings.server_names):
            log.info("generated the cluster's CA and credentials in %s; nodes join with the token in %s "
                     "and trust %s", folder, folder / pki.BOOTSTRAP_TOKEN, folder / pki.CA_CERT)  # fmt: skip
        return Issuer(folder, self.settings.node_cert_validity_s)

    def _readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready while serving, or while following in Kubernetes mode: readiness is not leadership
        (a Service reaches the leader by its pod's label)."""
        return self.serving or self.role == "follower", {
            "role": self.role,
            "settled": self.state.settled,
            "models": len(self.state.models),
        }


def _bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None, what: str
) -> None:
    """Bind ``address``; one clear error when it is taken (no SO_REUSEPORT: a second control plane
    on the same port must fail, not share it)."""
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises when the bind fails (it returns 0 on older versions)
        bound = 0
    if bound == 0:
        raise OSError(
            f"cannot bind the control plane's {what} port {address}: in use by another control plane? "
            "Stop it or pick another port"
        )
