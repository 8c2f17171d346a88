"""The API emulator behaves as the real API server does where our tests depend on it (real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from tests.support.kubeapi import CRD_FILE
from tests.support.kubeapi.server import Emulator

MODELS = "/apis/llamafleet.io/v1alpha1/namespaces/default/models"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
async def api() -> AsyncIterator[TestClient[object, object]]:
    emulator = Emulator([yaml.safe_load(CRD_FILE.read_text())])
    async with TestClient(TestServer(emulator.app())) as client:
        yield client


def model(name: str = "m", **spec: object) -> dict[str, object]:
    return {"apiVersion": "llamafleet.io/v1alpha1", "kind": "Model", "metadata": {"name": name},
            "spec": {"source": "builtin:x", **spec}}  # fmt: skip


async def test_create_defaults_and_versions(api: TestClient[object, object]) -> None:
    response = await api.post(MODELS, json=model())
    assert response.status == 201
    created = await response.json()
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert created["spec"]["replicas"] == 1  # the CRD's default
    listing = await (await api.get(MODELS)).json()
    assert listing["kind"] == "ModelList"
    assert int(listing["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert (await api.post(MODELS, json=model())).status == 409


async def test_generation_moves_with_spec_only_and_status_is_a_subresource(
    api: TestClient[object, object],
) -> None:
    await api.post(MODELS, json=model())
    labels = {"metadata": {"labels": {"a": "b"}}}
    assert (await (await api.patch(f"{MODELS}/m", json=labels, headers=MERGE)).json())["metadata"][
        "generation"
    ] == 1
    sneaky = {"spec": {"replicas": 5}, "status": {"readyReplicas": 3}}
    after = await (await api.patch(f"{MODELS}/m", json=sneaky, headers=MERGE)).json()
    assert after["metadata"]["generation"] == 2
    assert "status" not in after  # a spec write never changes status
    via_status = await (await api.patch(f"{MODELS}/m/status", json={**sneaky, "spec": {"replicas": 9}},
                                        headers=MERGE)).json()  # fmt: skip
    assert via_status["status"]["readyReplicas"] == 3
    assert via_status["spec"]["replicas"] == 5  # a status write never changes spec
    assert via_status["metadata"]["generation"] == 2


async def test_stale_update_conflicts_and_invalid_is_422(api: TestClient[object, object]) -> None:
    created = await (await api.post(MODELS, json=model())).json()
    await api.patch(f"{MODELS}/m", json={"spec": {"replicas": 2}}, headers=MERGE)
    assert (await api.put(f"{MODELS}/m", json=created)).status == 409
    bad = await api.post(MODELS, json=model("n", contextLength=1))
    assert bad.status == 422
    assert "spec.contextLength" in (await bad.json())["message"]
    strict = await api.post(f"{MODELS}?fieldValidation=Strict", json=model("o", replicaz=1))
    assert strict.status == 400


async def test_finalizers_hold_deletion(api: TestClient[object, object]) -> None:
    await api.post(MODELS, json={**model(), "metadata": {"name": "m", "finalizers": ["x/y"]}})
    deleting = await (await api.delete(f"{MODELS}/m")).json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert (await api.get(f"{MODELS}/m")).status == 200
    await api.patch(f"{MODELS}/m", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await api.get(f"{MODELS}/m")).status == 404


async def test_scale_subresource_and_selectors(api: TestClient[object, object]) -> None:
    await api.post(MODELS, json={**model(), "metadata": {"name": "m", "labels": {"tier": "gpu"}}})
    await api.post(MODELS, json=model("n"))
    scale = await (await api.patch(f"{MODELS}/m/scale", json={"spec": {"replicas": 3}}, headers=MERGE)).json()
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    assert (await (await api.get(f"{MODELS}/m")).json())["spec"]["replicas"] == 3
    by_label = await (await api.get(MODELS, params={"labelSelector": "tier=gpu"})).json()
    assert [o["metadata"]["name"] for o in by_label["items"]] == ["m"]
    by_field = await (await api.get(MODELS, params={"fieldSelector": "metadata.name=n"})).json()
    assert [o["metadata"]["name"] for o in by_field["items"]] == ["n"]


async def test_watch_resumes_from_a_resource_version_and_expires_with_410(
    api: TestClient[object, object],
) -> None:
    first = await (await api.post(MODELS, json=model())).json()
    await api.post(MODELS, json=model("n"))
    params = {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    watch = await api.get(MODELS, params=params)
    events = [line for line in (await watch.text()).splitlines() if line]
    assert len(events) == 1
    assert '"n"' in events[0]  # only what came after
    await api.post("/emulator/compact")
    expired = await api.get(MODELS, params=params)
    text = await expired.text()
    assert '"ERROR"' in text
    assert '"code": 410' in text
