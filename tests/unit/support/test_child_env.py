"""The one-thread environment of tests' processes reaches the settings it names (a misspelt name had
left every engine started by hand on all cores, spinning against the other worker's engines)."""

from __future__ import annotations

import pytest

from llamafleet.cli.settings import AgentProcess
from nodeagent.engine.__main__ import EngineSettings
from tests.support.child_env import ONE_THREAD_ENV


def test_each_variable_sets_the_thread_count_it_is_for(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ONE_THREAD_ENV.items():
        monkeypatch.setenv(name, value)
    assert EngineSettings().engine.n_threads == 1
    assert AgentProcess().agent.supervisor.engine_threads == 1
