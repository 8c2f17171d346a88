"""The control plane's settings (the gateway's are in controlplane/gateway/settings.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from llamafleet.security.pki import default_pki_dir


def _identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class KubernetesSettings(BaseModel):
    """`Model` resources as desired state, status written back, Lease leader election (source: kubernetes)."""

    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file (default: the pod's service account in a cluster, else ~/.kube/config)",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces whose Models are served (default: all namespaces)"
    )
    lease_namespace: str = Field(
        default="default", description="Namespace of the leader-election Lease (the control plane's own)"
    )
    lease_name: str = Field(
        default="llamafleet-controlplane", description="Name of the leader-election Lease"
    )
    identity: str = Field(
        default_factory=_identity, description="This process's name in the Lease (default: hostname-pid)"
    )
    lease_duration_s: float = Field(
        default=10.0, description="Seconds a leader's Lease lasts unrenewed; a follower takes over after it"
    )
    renew_deadline_s: float = Field(
        default=7.0,
        gt=0,
        description="Seconds the leader keeps trying to renew before it steps down (and exits); must be "
        "shorter than the lease duration, or two leaders could act at once",
    )
    retry_period_s: float = Field(
        default=2.0, gt=0, description="Seconds between Lease renewals and acquire tries (< renew deadline)"
    )
    model_namespaces: list[str] = Field(
        default_factory=list,
        description="PATTERN=NS1,NS2: model ids matching the shell pattern are served only from those "
        "namespaces (a guard against name squatting; ids no pattern matches: any watched namespace)",
    )
    pod_name: str = Field(
        default="",
        description="This process's pod (in the Lease's namespace): labeled llamafleet.io/leader=true while "
        "it leads, so the control plane's gRPC Service selects only the leader (empty: no label)",
    )
    drain_grace_s: float = Field(
        default=30.0,
        description="Seconds a deleted Model waits for its replicas to stop before its finalizer is removed",
    )
    api_workers: int = Field(default=8, ge=1, le=64, description="Kubernetes API calls in flight at once")
    agent_selector: str = Field(
        default="",
        description="Label selector of the agents' pods (in the Lease's namespace): a node whose stream "
        "comes through a proxy is believed when its agent pod on that Node has the IP it advertises",
    )
    agent_labels: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE labels every agent pod is given (the chart's agent.labels); a node's labels "
        "are its Kubernetes Node's plus these, never what the agent reports",
    )
    node_labels_refresh_s: float = Field(
        default=30.0, gt=0, description="Seconds between re-reads of connected nodes' Kubernetes Node labels"
    )
    node_keys_configmap: str = Field(
        default="llamafleet-node-keys",
        description="ConfigMap (in the Lease's namespace) keeping which key each node id holds, so a "
        "failover keeps them (docs/SECURITY.md)",
    )

    @model_validator(mode="after")
    def _name_policy_parses(self) -> KubernetesSettings:
        from controlplane.operator.name_policy import NamePolicy  # stdlib only: a check at start

        NamePolicy.parse(self.model_namespaces)
        return self

    @model_validator(mode="after")
    def _renew_before_the_lease_ends(self) -> KubernetesSettings:
        if self.renew_deadline_s >= self.lease_duration_s:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline_s:g}s) must be shorter than the lease duration "
                f"({self.lease_duration_s:g}s): a leader must stop acting before a follower may take over"
            )
        if self.retry_period_s >= self.renew_deadline_s:
            raise ValueError(
                f"the retry period ({self.retry_period_s:g}s) must be shorter than the renew deadline "
                f"({self.renew_deadline_s:g}s): a leader must get at least one retry before it steps down"
            )
        return self


class ControlPlaneSettings(BaseModel):
    """Desired state, the agents' gRPC endpoint, node liveness."""

    source: Literal["file", "kubernetes"] = Field(
        default="file",
        description="file: models from --models FILE; kubernetes: from Model resources (leader-elected)",
    )

    grpc_host: str = Field(
        default="127.0.0.1", description="Address the gRPC server (agents, gateways) binds to"
    )
    grpc_port: int = Field(default=50051, description="gRPC port for agents and gateways")
    models: Path | None = Field(default=None, description="YAML file of desired models, re-read on change")
    node_grace_s: float = Field(
        default=30.0, description="Seconds a disconnected node keeps its replicas before they are re-placed"
    )
    status_interval_s: float = Field(default=5.0, description="How often agents report when nothing changes")
    scheduler_profile: Path | None = Field(
        default=None,
        description="YAML scheduler profile: filters and weighted scorers (default: the built-in profile, "
        "docs/SCHEDULER.md)",
    )
    metrics_port: int = Field(default=0, description="Port for Prometheus /metrics (0: off)")
    http_port: int = Field(
        default=0,
        description="Port for /healthz, /readyz (ready: serving, or following the leader), /metrics (0: off)",
    )
    http_host: str = Field(default="127.0.0.1", description="Address the /healthz, /readyz port binds to")
    settle_s: float = Field(
        default=15.0,
        description="Seconds a starting control plane waits for agents to bring back running replicas "
        "before it places new ones (ends early once the expected nodes are back)",
    )
    tls_dir: Path = Field(
        default_factory=default_pki_dir,
        description="The cluster's CA (ca.crt, ca.key), this server's certificate (tls.crt, tls.key) and "
        "bootstrap tokens (bootstrap-token); generated on first start when the folder has no ca.crt",
    )
    insecure: bool = Field(
        default=False,
        description="Plaintext gRPC, no node identities (anyone who reaches the port can act as any node): "
        "only for a network where every process is trusted",
    )
    join_port: int = Field(
        default=0,
        description="Port where nodes trade a bootstrap token for a certificate (0: --grpc-port + 1)",
    )
    node_cert_validity_s: float = Field(
        default=30 * 86400.0, ge=10, description="How long a node certificate is valid (nodes renew at 2/3)"
    )
    server_names: list[str] = Field(
        default_factory=list,
        description="Extra DNS names or addresses for a generated server certificate (clients check "
        "controlplane.llamafleet whatever address they dial)",
    )
    node_keys_file: Path | None = Field(
        default=None,
        description="File keeping which key each node id holds (--source file; default: TLS_DIR/"
        "node-keys.json). A known node id joins again only after `llamafleet nodes forget`",
    )
    node_engine_ports: str = Field(
        default="",
        pattern=r"^(\d{1,5}-\d{1,5})?$",
        description="FIRST-LAST: the only ports a node may report engines on (the agents' "
        "--supervisor-engine-ports; empty: any port, always on the node's own address)",
    )
    node_rpc_ports: str = Field(
        default="",
        pattern=r"^(\d{1,5}-\d{1,5})?$",
        description="FIRST-LAST: the only ports a node may report RPC workers on (empty: any port)",
    )
    node_address_check: Literal["peer", "off"] = Field(
        default="peer",
        description="peer: a node must connect from the address it advertises (in Kubernetes mode, or from "
        "anywhere when its agent pod has that IP); off: believe it (NAT or a proxy hides node addresses)",
    )
    join_rate_per_minute: float = Field(
        default=20.0,
        gt=0,
        description="Joins a peer address may make per minute (a burst of as many); more get "
        "RESOURCE_EXHAUSTED and retry",
    )
    kubernetes: KubernetesSettings = KubernetesSettings()

    @property
    def address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def join_address(self) -> str:
        return f"{self.grpc_host}:{self.join_port or self.grpc_port + 1}"
