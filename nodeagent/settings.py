"""The node agent's settings, grouped by concern; built once by the CLI and passed down."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from llamafleet.security.pki import default_pki_dir


def _default_data_dir() -> Path:
    return Path.home() / ".cache" / "llamafleet" / "agent"


class SupervisorSettings(BaseModel):
    """Engine processes: where they listen, how they are watched and restarted."""

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Where engine logs (logs/<replica>.log) are written"
    )
    engine_bind_host: str = Field(default="127.0.0.1", description="Address engines bind their HTTP port to")
    advertise_host: str = Field(
        default="127.0.0.1", description="Host the gateway uses to reach engines on this node (pod/node IP)"
    )
    engine_ports: str = Field(
        default="",
        pattern=r"^(\d{1,5}-\d{1,5})?$",
        description="Port range engines listen on, FIRST-LAST (so a NetworkPolicy can name it; empty: any)",
    )
    engine_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads per engine when its Model sets none (0: the node's usable CPUs shared "
        "evenly among the replicas it runs)",
    )
    health_interval_s: float = Field(default=1.0, description="Seconds between engine /health checks")
    health_timeout_s: float = Field(default=2.0, description="Seconds a /health check may take")
    health_failures_to_restart: int = Field(
        default=3, description="Consecutive failed health checks before a ready engine is restarted"
    )
    start_timeout_s: float = Field(default=300.0, description="Seconds an engine may take to load its model")
    restart_backoff_initial_s: float = Field(
        default=1.0, description="First restart delay; doubles per crash"
    )
    restart_backoff_max_s: float = Field(default=30.0, description="Longest delay between restarts")
    max_start_failures: int = Field(
        default=5, description="Starts in a row that never became ready before the replica is marked failed"
    )
    stop_grace_s: float = Field(
        default=15.0,
        description="Seconds an engine gets after SIGTERM before SIGKILL (it lets requests in flight finish)",
    )
    drain_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between reporting a replica as stopping (gateways stop sending it requests) "
        "and stopping its engine",
    )

    rpc_ports: str = Field(
        default="",
        pattern=r"^(\d{1,5}-\d{1,5})?$",
        description="Port range RPC workers' gates listen on, FIRST-LAST (layer splits; empty: any)",
    )
    rpc_host: str = Field(
        default="", description="Address RPC workers' gates listen on (default: --supervisor-advertise-host)"
    )
    rpc_decode_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A split head exits when one decode step takes longer (a lost or stopped RPC worker)",
    )
    rpc_cache_max: str = Field(
        default="20GiB",
        pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*[kmgtKMGT]?(i?[bB])?\s*$",
        description="Size cap of the RPC workers' tensor cache (oldest files go first)",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="The node's model cache: downloaded models, one copy each (default: DATA_DIR/models)",
    )
    cache_max: str = Field(
        default="0",
        pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*[kmgtKMGT]?(i?[bB])?\s*$",
        description="Size cap of the model cache; least recently used models no replica uses go first "
        "(0: no cap)",
    )
    download_headers_file: Path | None = Field(
        default=None,
        description="YAML of URL prefix → HTTP headers for model downloads (e.g. Authorization), "
        "from a Secret; re-read for every download. A prefix matches by scheme, host, port and whole "
        "path segments; the headers never follow a redirect to another origin",
    )
    download_max: str = Field(
        default="0",
        pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*[kmgtKMGT]?(i?[bB])?\s*$",
        description="Largest model file a download may write; it stops there (0: no cap beyond the "
        "file's announced size and the cache's free room)",
    )
    allow_plain_http: bool = Field(
        default=False,
        description="Download http:// model sources that declare no sha256 (anyone on the network path "
        "could swap the file; by default such a source is refused: give its sha256 or use https)",
    )
    hf_token_file: Path | None = Field(
        default=None, description="File holding a Hugging Face token for hf:// sources (else HF_TOKEN)"
    )
    adapter_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders LoRA adapters may be loaded from at runtime (POST /v1/replicas/MODEL/adapters); "
        "default: DATA_DIR/adapters",
    )

    @model_validator(mode="after")
    def _engines_on_the_node_address(self) -> SupervisorSettings:
        if self.engine_bind_host.strip() in ("", "0.0.0.0", "::", "[::]", "*"):
            raise ValueError(
                "--supervisor-engine-bind-host must be this node's own address (or 127.0.0.1), never a "
                "wildcard: engines would be reachable on every interface"
            )
        return self

    def model_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "models"

    def allowed_adapter_dirs(self) -> list[Path]:
        return self.adapter_dirs or [self.data_dir / "adapters"]

    def engine_port_range(self) -> tuple[int, int] | None:
        return _port_range(self.engine_ports)

    def rpc_port_range(self) -> tuple[int, int] | None:
        return _port_range(self.rpc_ports)


def _port_range(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    first, last = (int(p) for p in text.split("-"))
    return first, last


class UplinkSettings(BaseModel):
    """The gRPC stream to the control plane."""

    controlplane: str = Field(default="127.0.0.1:50051", description="Control plane gRPC address (host:port)")
    reconnect_backoff_initial_s: float = Field(default=0.5, description="First reconnect delay")
    reconnect_backoff_max_s: float = Field(
        default=4.0,
        description="Longest reconnect delay (keep it under the control plane's --settle-s, so a new "
        "leader sees this node back before it places anything)",
    )
    status_interval_s: float = Field(
        default=5.0, description="Seconds between Status reports when nothing changes (Welcome may override)"
    )
    insecure: bool = Field(
        default=False, description="Plaintext gRPC to a control plane started with --insecure (no identity)"
    )
    ca: Path = Field(
        default_factory=lambda: default_pki_dir() / "ca.crt",
        description="The cluster CA, to check the control plane before this node has a certificate",
    )
    bootstrap_token_file: Path = Field(
        default_factory=lambda: default_pki_dir() / "bootstrap-token",
        description="File holding the bootstrap token this node joins with (first line); read only when "
        "the node has no certificate yet",
    )
    join: str = Field(
        default="", description="The control plane's join address (default: --uplink-controlplane's port + 1)"
    )
    identity_dir: Path | None = Field(
        default=None,
        description="This node's credential (ca.crt, tls.crt, tls.key): kept from a join, or supplied "
        "(cert-manager); default: DATA_DIR/identity/NODE_ID, so nodes sharing a data folder (a shared "
        "volume) never overwrite each other's",
    )

    def join_address(self) -> str:
        if self.join:
            return self.join
        host, _, port = self.controlplane.rpartition(":")
        return f"{host}:{int(port) + 1}"


class AgentSettings(BaseModel):
    """This node: identity, labels, metrics."""

    node_id: str = Field(
        default_factory=socket.gethostname, description="Unique node name (default: hostname)"
    )
    labels: list[str] = Field(default_factory=list, description="Node labels as key=value")
    allocatable_memory: str = Field(
        default="",
        pattern=r"^(\s*[0-9]+(\.[0-9]+)?\s*[kmgtKMGT]?(i?[bB])?\s*)?$",
        description="Host memory this agent may use for models, e.g. 6GiB (default: all the machine has)",
    )
    allocatable_cpus: int = Field(
        default=0,
        ge=0,
        description="CPUs this agent's engines may use in all, at most what its affinity mask and cgroup "
        "quota allow (default: that; threads per engine are shares of it)",
    )
    metrics_port: int = Field(default=0, description="Port for Prometheus /metrics only (0: off)")
    http_port: int = Field(
        default=0,
        description="Port for /healthz, /readyz (ready: connected to the control plane), /metrics (0: off)",
    )
    http_host: str = Field(default="127.0.0.1", description="Address the /healthz, /readyz port binds to")
    supervisor: SupervisorSettings = SupervisorSettings()
    uplink: UplinkSettings = UplinkSettings()

    def identity_dir(self) -> Path:
        return self.uplink.identity_dir or self.supervisor.data_dir / "identity" / self.node_id

    def label_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.labels if "=" in item)
        return {k.strip(): v.strip() for k, v in pairs}
