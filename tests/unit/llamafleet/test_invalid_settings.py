"""A process given invalid settings says what is wrong in one line and exits non-zero: no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--supervisor-engine-ports", "5"], "agent.supervisor.engine_ports: String should match pattern"),
        (["--supervisor-engine-bind-host", "0.0.0.0"], "must be this node's own address"),
        (["--allocatable-memory", "lots"], "agent.allocatable_memory"),
    ],
)
def test_invalid_agent_settings_are_one_line_and_exit_non_zero(flags: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "llamafleet.cli.main", "agent", *flags],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("invalid settings: ")
    assert says in lines[0]
