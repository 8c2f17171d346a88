"""One settings object per process, composed from each component's groups; env prefix LLAMAFLEET_."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.gateway.settings import GatewaySettings
from controlplane.settings import ControlPlaneSettings
from llamafleet.core.settings_cli import ENV_NESTED_DELIMITER, ENV_PREFIX
from nodeagent.settings import AgentSettings


def bundled_models_file() -> Path:
    return Path(str(files("llamafleet").joinpath("presets/smollm2.yaml")))


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

    def wired(self) -> UpSettings:
        """Point the gateway and agent at this control plane; default to the bundled models file."""
        cp = self.controlplane.model_copy(
            update={"models": self.controlplane.models or bundled_models_file()}
        )
        agent = self.agent.model_copy(
            update={"uplink": self.agent.uplink.model_copy(update={"controlplane": cp.address})}
        )
        gateway = self.gateway.model_copy(update={"controlplane": cp.address})
        return self.model_copy(update={"controlplane": cp, "agent": agent, "gateway": gateway})
