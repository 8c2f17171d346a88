"""Lease leader election against the API emulator: one leader, hand-over on release, takeover after expiry,
and a leader that cannot renew steps down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestServer

from controlplane.operator.kube import Kube
from controlplane.operator.leader import LeaderElector, LeadershipLost
from controlplane.settings import KubernetesSettings
from tests.support.kubeapi import CRD_FILE, write_kubeconfig
from tests.support.kubeapi.server import Emulator

pytestmark = pytest.mark.integration


@pytest.fixture
async def kubeconfig(tmp_path: Path) -> AsyncIterator[Path]:
    server = TestServer(Emulator([yaml.safe_load(CRD_FILE.read_text())]).app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield write_kubeconfig(tmp_path / "kubeconfig", str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


def elector(kubeconfig: Path, name: str) -> tuple[LeaderElector, Kube]:
    settings = KubernetesSettings(kubeconfig=kubeconfig, identity=name, lease_duration_s=2,
                                  renew_deadline_s=1.5, retry_period_s=0.2)  # fmt: skip
    kube = Kube(settings)
    return LeaderElector(kube, settings), kube


async def test_one_leader_then_hand_over_then_takeover_after_expiry(kubeconfig: Path) -> None:
    (a, ka), (b, kb), (c, kc) = (elector(kubeconfig, n) for n in "abc")
    never = asyncio.Event()
    try:
        assert await a.acquire(never)
        stop_a = asyncio.Event()
        holding = asyncio.create_task(a.hold(stop_a))
        waiting = asyncio.create_task(b.acquire(never))
        await asyncio.sleep(3)  # longer than the lease: a renews, so b must not lead
        assert not waiting.done()

        stop_a.set()
        await holding
        released = time.monotonic()
        await a.release()
        assert await asyncio.wait_for(waiting, 2)
        assert time.monotonic() - released < 1.0  # a released Lease is taken at the next try

        # b dies without releasing: c takes over only once the Lease has gone unrenewed for its duration.
        started = time.monotonic()
        assert await asyncio.wait_for(c.acquire(never), 5)
        assert time.monotonic() - started >= 2
        assert c.transitions == 2
    finally:
        for kube in (ka, kb, kc):
            kube.close()


async def test_a_leader_that_cannot_renew_steps_down(kubeconfig: Path) -> None:
    (a, ka), (_, kb) = elector(kubeconfig, "a"), elector(kubeconfig, "b")
    never = asyncio.Event()
    try:
        assert await a.acquire(never)
        # Someone else rewrites the Lease (a partition healed the wrong way): a's renewals now fail.
        lease = await kb.get_lease("default", "llamafleet-controlplane")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "intruder"
        await kb.replace_lease("default", "llamafleet-controlplane", lease)
        with pytest.raises(LeadershipLost, match="exiting"):
            await asyncio.wait_for(a.hold(never), 5)
        assert not a.leading
    finally:
        ka.close()
        kb.close()
