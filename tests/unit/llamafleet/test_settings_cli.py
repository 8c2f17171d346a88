"""Flags, environment variables and defaults reach the same settings object, in that order of precedence."""

from __future__ import annotations

import argparse

import pytest

from llamafleet.cli.main import build_parser
from llamafleet.cli.settings import UpSettings
from llamafleet.core.settings_cli import settings_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_flag_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAFLEET_GATEWAY__PORT", "9000")
    monkeypatch.setenv("LLAMAFLEET_AGENT__SUPERVISOR__STOP_GRACE_S", "3")
    settings = settings_from_args(UpSettings, parse(["up", "--gateway-port", "9100"]))
    assert settings.gateway.port == 9100
    assert settings.agent.supervisor.stop_grace_s == 3
    assert settings.controlplane.grpc_port == 50051


def test_up_wires_components_to_its_control_plane() -> None:
    settings = settings_from_args(UpSettings, parse(["up", "--controlplane-grpc-port", "6000"])).wired()
    assert settings.gateway.controlplane == "127.0.0.1:6000"
    assert settings.agent.uplink.controlplane == "127.0.0.1:6000"
    assert settings.controlplane.models is not None
    assert settings.controlplane.models.name == "smollm2.yaml"


def test_help_explains_options_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["gateway", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--port N HTTP port of the OpenAI-style API (default: 8080; env LLAMAFLEET_GATEWAY__PORT)" in out
