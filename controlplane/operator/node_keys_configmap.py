"""The node keys' store in Kubernetes mode: one ConfigMap in the control plane's namespace, one data
entry per node id (controlplane/state/node_keys.py says what an entry means). Each change is a JSON merge
patch of that one entry, so two writes never overwrite each other's nodes."""

from __future__ import annotations

from controlplane.operator.kube import Kube, KubeError


class ConfigMapPinStore:
    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.where = f"ConfigMap {namespace}/{name}"

    async def load(self) -> dict[str, str]:
        found = await self._kube.get_configmap(self._namespace, self._name)
        if found is None:
            return {}
        return {str(k): str(v) for k, v in (found.get("data") or {}).items()}

    async def put(self, node_id: str, value: str) -> None:
        try:
            await self._kube.patch_configmap(self._namespace, self._name, {"data": {node_id: value}})
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": self._name, "labels": {"app.kubernetes.io/part-of": "llamafleet"}},
                    "data": {node_id: value}}  # fmt: skip
            try:
                await self._kube.create_configmap(self._namespace, body)
            except KubeError as race:
                if race.status != 409:  # made meanwhile: patch it
                    raise
                await self._kube.patch_configmap(self._namespace, self._name, {"data": {node_id: value}})
