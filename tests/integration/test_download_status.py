"""A downloading replica's progress reaches its Model's status at most every 5 s and every 5% of the
file (issue 34), against the Kubernetes API emulator; the download's start and end at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.download_status import run
from tests.support.kubeapi import kube_api
from tests.support.ports import server_port

pytestmark = pytest.mark.integration


def test_download_progress_is_written_paced_and_every_report_without_pacing(tmp_path: Path) -> None:
    rows = {}
    for paced in (False, True):
        folder = tmp_path / ("paced" if paced else "every")
        folder.mkdir()
        with kube_api(folder, server_port()) as api:
            rows[paced] = asyncio.run(run(4, 12, api.url, api.kubeconfig, paced))["status_writes_per_model"]
    # 13 reports over 12 s: unpaced, nearly each is a write; paced, the 5 s windows allow at most 3
    # progress writes (at 0 s, ≥ 5 s, ≥ 10 s), plus the one that says the replica is ready.
    assert rows[False] >= 10
    assert 2 <= rows[True] <= 4
