"""The gateway's settings."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from llamafleet.http.body_limit import DEFAULT_MAX_BODY_BYTES
from llamafleet.security.pki import default_pki_dir


class GatewaySettings(BaseModel):
    """HTTP API, where the routing table comes from, and how requests are forwarded."""

    host: str = Field(
        default="127.0.0.1",
        description="Addresses to serve the API on, comma-separated (0.0.0.0: all IPv4, ::: all)",
    )
    port: int = Field(default=8080, description="HTTP port of the OpenAI-style API")
    picker_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Also serve the Gateway API Inference Extension's endpoint-picker protocol (Envoy "
        "ext_proc, gRPC, plaintext) on this port, picking with this gateway's balancer for an "
        "InferencePool (docs/INFERENCE_EXTENSION.md); 0: off",
    )
    controlplane: str = Field(
        default="127.0.0.1:50051", description="Control plane gRPC address to watch routes from"
    )
    tls_dir: Path = Field(
        default_factory=lambda: default_pki_dir() / "gateway",
        description="This gateway's credential for the control plane (ca.crt, tls.crt, tls.key; "
        "CN llamafleet:gateway)",
    )
    insecure: bool = Field(default=False, description="Plaintext gRPC to a control plane run with --insecure")
    gateway_id: str = Field(default_factory=socket.gethostname, description="Name of this gateway replica")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer tokens with full access (every model, admin routes); prefer --keys-file. "
        "No keys at all: no authentication (trusted networks only)",
    )
    keys_file: Path | None = Field(
        default=None,
        description="YAML of API keys, stored hashed, each scoped to models and admin rights with "
        "requests/tokens per minute (`llamafleet keys create`; re-read on change; docs/SECURITY.md)",
    )
    retry_after_s: int = Field(
        default=2, description="Retry-After seconds sent with 503 when no replica is ready"
    )
    max_attempts: int = Field(
        default=3, description="Replicas tried per request when connecting fails (before any byte was sent)"
    )
    connect_timeout_s: float = Field(default=2.0, description="Seconds to open a connection to an engine")
    balancer: Literal["least-load", "prefix-affinity", "session", "round-robin"] = Field(
        default="prefix-affinity",
        description="Policy for models whose spec names none (see docs/BALANCER.md); prefix-affinity keeps "
        "conversations and system prompts where their KV cache is, and places new ones by load",
    )
    queue_limit: int = Field(
        default=256,
        ge=0,
        description="Requests that may wait per model when every replica is busy, or while an autoscaled "
        "model's replicas start (then 429)",
    )
    tenant_queue_limit: int = Field(
        default=64,
        ge=0,
        description="Requests one tenant may have waiting per model (then 429 naming this bound; 0: only "
        "--gateway-queue-limit), so one team's backlog cannot fill the queue for every team",
    )
    tenant_preemption: bool = Field(
        default=True,
        description="When every slot is taken, let a tenant with nothing in flight on a model suspend a "
        "request of a tenant holding a request more than its weighted share (resumed exactly when a slot "
        "frees), instead of waiting a slot turn",
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a request waits for a busy replica's slot before 429"
    )
    affinity_ttl_s: float = Field(
        default=600.0, gt=0, description="How long a prefix or session stays tied to its replica"
    )
    redis_url: str = Field(
        default="",
        description="Share load, prefix owners and sessions between gateways (redis://HOST:PORT/DB)",
    )
    shutdown_grace_s: float = Field(
        default=15.0, ge=0, description="On SIGTERM: stop accepting, let requests in flight finish this long"
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=0,
        description="Largest request body accepted, in bytes (413 beyond)",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins browser apps may call the API from (e.g. https://app.example.com, or * for "
        "any); preflights are answered before authentication. None: no CORS headers",
    )
    model_aliases: list[str] = Field(
        default_factory=list,
        description="ALIAS=MODEL, e.g. gpt-4o-mini=qwen2.5-7b: requests naming the alias are served by "
        "the model (the answer names the alias, as the client asked)",
    )
    default_model: str = Field(default="", description="The model for requests that name none")

    @field_validator("model_aliases")
    @classmethod
    def _alias_pairs(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            alias, sep, model = entry.partition("=")
            if not sep or not alias.strip() or not model.strip():
                raise ValueError(f"{entry!r} is not ALIAS=MODEL")
        return entries

    request_timeout_s: float = Field(
        default=600.0, description="Seconds an engine may go silent mid-response before the request fails"
    )
