"""The control plane's settings (the gateway's are in controlplane/gateway/settings.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ControlPlaneSettings(BaseModel):
    """Desired state, the agents' gRPC endpoint, node liveness."""

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

    @property
    def address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"
