"""The operator's Model informer against the API emulator: a watch broken mid-stream resumes from its
resourceVersion, a 410 Gone relists, and in both cases the cache ends equal to the server: no update lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.operator.informer import ModelInformer
from controlplane.operator.kube import Kube
from controlplane.settings import KubernetesSettings
from tests.support.kubeapi import KubeApi, kube_api
from tests.support.ports import server_port

pytestmark = pytest.mark.integration

MODELS = "/apis/llamafleet.io/v1alpha1/namespaces/default/models"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeApi]:
    with kube_api(tmp_path, server_port()) as running:
        yield running


def model(name: str, replicas: int = 1) -> dict[str, object]:
    return {
        "apiVersion": "llamafleet.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"source": "builtin:smollm2-135m", "replicas": replicas},
    }


async def server_view(http: httpx.AsyncClient) -> dict[str, tuple[str, int]]:
    items = (await http.get(MODELS)).json()["items"]
    return {o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o["spec"]["replicas"]) for o in items}


def cache_view(informer: ModelInformer) -> dict[str, tuple[str, int]]:
    return {
        k[1]: (o["metadata"]["resourceVersion"], o["spec"]["replicas"]) for k, o in informer.objects.items()
    }


async def converged(informer: ModelInformer, http: httpx.AsyncClient) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while cache_view(informer) != await server_view(http):
        assert asyncio.get_running_loop().time() < deadline, (cache_view(informer), await server_view(http))
        await asyncio.sleep(0.05)


async def churn(http: httpx.AsyncClient, round_: int) -> None:
    """Create one, scale one, delete one: every kind of event."""
    assert (await http.post(MODELS, json=model(f"new-{round_}"))).status_code == 201
    patch = {"spec": {"replicas": round_ + 2}}
    headers = {"Content-Type": "application/merge-patch+json"}
    assert (await http.patch(f"{MODELS}/m-0", json=patch, headers=headers)).status_code == 200
    assert (await http.delete(f"{MODELS}/m-{round_ + 1}")).status_code == 200


async def control(api: KubeApi, verb: str, **params: float) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(f"{api.url}/emulator/{verb}", params=params)).raise_for_status()


async def test_no_update_is_lost_across_broken_watches_and_410(api: KubeApi) -> None:
    kube = Kube(KubernetesSettings(kubeconfig=api.kubeconfig))
    informer = ModelInformer(kube, None, lambda: None)
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        for i in range(5):
            assert (await http.post(MODELS, json=model(f"m-{i}"))).status_code == 201
        task = asyncio.create_task(informer.run(stop))
        try:
            await converged(informer, http)
            assert len(informer.objects) == 5

            # Broken mid-stream while changes happen: resumed from the last resourceVersion.
            await control(api, "break-watches", hold_s=0.5)
            await churn(http, 0)
            await converged(informer, http)
            assert informer.resumes >= 1
            assert informer.relists == 0

            # History compacted while the watch was down: 410 Gone, then a fresh list.
            await control(api, "break-watches", hold_s=0.5)
            await churn(http, 1)
            await control(api, "compact")
            await converged(informer, http)
            assert informer.relists == 1

            # And it keeps watching normally afterwards.
            await churn(http, 2)
            await converged(informer, http)
        finally:
            stop.set()
            await task
            kube.close()


async def test_a_namespaced_informer_sees_only_its_namespace(api: KubeApi) -> None:
    kube = Kube(KubernetesSettings(kubeconfig=api.kubeconfig))
    informer = ModelInformer(kube, "team-b", lambda: None)
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}
        assert (await http.post("/api/v1/namespaces", json=namespace)).status_code == 201
        team_b = "/apis/llamafleet.io/v1alpha1/namespaces/team-b/models"
        assert (await http.post(MODELS, json=model("elsewhere"))).status_code == 201
        assert (await http.post(team_b, json=model("mine"))).status_code == 201
        task = asyncio.create_task(informer.run(stop))
        try:
            for _ in range(100):
                if informer.synced:
                    break
                await asyncio.sleep(0.05)
            assert (await http.post(MODELS, json=model("elsewhere-2"))).status_code == 201
            assert (await http.post(team_b, json=model("mine-2"))).status_code == 201
            for _ in range(100):
                if len(informer.objects) == 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # an event from the other namespace would have arrived by now
            assert sorted(informer.objects) == [("team-b", "mine"), ("team-b", "mine-2")]
        finally:
            stop.set()
            await task
            kube.close()
