"""One settings object per process, composed from each component's groups; env prefix LLAMAFLEET_."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.gateway.settings import GatewaySettings
from controlplane.settings import ControlPlaneSettings
from llamafleet.core.settings_cli import ENV_NESTED_DELIMITER, ENV_PREFIX
from llamafleet.security import pki
from nodeagent.settings import AgentSettings


def bundled_models_file() -> Path:
    return Path(str(files("llamafleet").joinpath("presets/smollm2.yaml")))


def with_replicas(models_file: Path, replicas: int) -> Path:
    """A copy of ``models_file`` (in a fresh temporary folder) where every model has ``replicas``."""
    data = yaml.safe_load(models_file.read_text()) or {}
    for model in data.get("models") or []:
        model["replicas"] = replicas
    target = Path(tempfile.mkdtemp(prefix="llamafleet-up-")) / models_file.name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


class ProcessSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="ignore"
    )

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")


class ControlPlaneProcess(ProcessSettings):
    controlplane: ControlPlaneSettings = ControlPlaneSettings()


class GatewayProcess(ProcessSettings):
    gateway: GatewaySettings = GatewaySettings()


class AgentProcess(ProcessSettings):
    agent: AgentSettings = AgentSettings()


class UpSettings(ProcessSettings):
    """Everything on one machine: control plane, gateway and one agent, wired to each other."""

    controlplane: ControlPlaneSettings = ControlPlaneSettings()
    gateway: GatewaySettings = GatewaySettings()
    agent: AgentSettings = AgentSettings()
    ready_timeout_s: float = Field(default=300.0, description="Seconds to wait for every model to be ready")
    replicas: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Replicas of every model (0: as the models file says), to try balancing",
    )
    balancer: Literal["least-load", "prefix-affinity", "session", "round-robin"] | None = Field(
        default=None, description="The gateway's balancing policy (same as --gateway-balancer)"
    )

    def wired(self) -> UpSettings:
        """Point the gateway and agent at this control plane; default to the bundled models file."""
        models = self.controlplane.models or bundled_models_file()
        if self.replicas:
            models = with_replicas(models, self.replicas)
        cp = self.controlplane.model_copy(update={"models": models})
        # One machine, one PKI: the agent joins with the control plane's token and trusts its CA; the
        # gateway uses the credential it generated. --controlplane-insecure makes all three plaintext.
        uplink = self.agent.uplink.model_copy(update={
            "controlplane": cp.address, "join": cp.join_address, "insecure": cp.insecure,
            "ca": cp.tls_dir / pki.CA_CERT, "bootstrap_token_file": cp.tls_dir / pki.BOOTSTRAP_TOKEN,
        })  # fmt: skip
        agent = self.agent.model_copy(update={"uplink": uplink})
        gateway = self.gateway.model_copy(
            update={"controlplane": cp.address, "insecure": cp.insecure, "tls_dir": cp.tls_dir / "gateway"}
        )
        if self.balancer:
            gateway = gateway.model_copy(update={"balancer": self.balancer})
        return self.model_copy(update={"controlplane": cp, "agent": agent, "gateway": gateway})
