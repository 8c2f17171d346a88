"""An Assign that reaches a stopping agent starts nothing and ends nothing (it once ended the agent
with a traceback: stopping engines freed the memory a pending replica was waiting for)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llamafleet.contract.replica import ReplicaSpec
from nodeagent.settings import SupervisorSettings
from nodeagent.supervisor.supervisor import Supervisor


async def test_an_assign_that_arrives_while_the_agent_stops_starts_nothing(tmp_path: Path) -> None:
    supervisor = Supervisor(SupervisorSettings(data_dir=tmp_path), lambda: None)
    spec = ReplicaSpec("m-1", "m", "/models/m.gguf")
    with pytest.raises(RuntimeError, match="not running"):  # before it runs: a mistake in the agent
        supervisor.assign(spec, 1)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    await asyncio.sleep(0)
    stop.set()
    await running
    supervisor.assign(spec, 2)
    assert supervisor.states() == []
