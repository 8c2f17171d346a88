"""The Kubernetes API through the official `kubernetes` client, made awaitable.

The client is synchronous (urllib3). Each call runs on this object's own bounded thread pool,
owned and shut down here, so the event loop never blocks and no call outlives the operator.
Watch streams run on a second pool, one thread per stream, and can be interrupted from the loop.
Errors come back as ``KubeError`` with the HTTP status (0: the API server was unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
from kubernetes import client, config

from controlplane.operator import resource
from controlplane.settings import KubernetesSettings
from llamafleet.core.errors import LlamafleetError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(LlamafleetError):
    """A Kubernetes API call failed: ``status`` is the HTTP status, 0 when the server was unreachable."""

    code = "kubernetes_api"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(exc: client.ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """The pod's service account in a cluster, else the kubeconfig (the given file, or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return configuration
            except config.ConfigException:
                pass
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    except (config.ConfigException, OSError) as exc:
        where = kubeconfig or "~/.kube/config"
        raise KubeError(0, f"no Kubernetes credentials: not in a pod, and {where}: {exc}") from exc
    return configuration


class Kube:
    def __init__(self, settings: KubernetesSettings) -> None:
        configuration = load_configuration(str(settings.kubeconfig) if settings.kubeconfig else None)
        configuration.connection_pool_maxsize = settings.api_workers + 8
        self.server = configuration.host
        self._api = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(self._api)
        self.core = client.CoreV1Api(self._api)
        self.coordination = client.CoordinationV1Api(self._api)
        self._calls = ThreadPoolExecutor(settings.api_workers, thread_name_prefix="kube-call")
        self._streams = ThreadPoolExecutor(8, thread_name_prefix="kube-watch")

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)
        self._api.close()  # type: ignore[no-untyped-call]

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call; JSON bodies come back as dicts."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._calls, functools.partial(fn, *args, _request_timeout=(5, 30), **kwargs)
            )
        except client.ApiException as exc:
            raise KubeError(exc.status or 0, _message(exc)) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError(0, f"Kubernetes API unreachable: {exc}") from exc
        if isinstance(result, urllib3.response.BaseHTTPResponse):
            return json.loads(result.data or b"null")
        return result

    # --- Models --------------------------------------------------------------------------
    async def list_models(self, namespace: str | None) -> Obj:
        args = (resource.GROUP, resource.VERSION)
        if namespace is None:
            result: Obj = await self.call(self.custom.list_cluster_custom_object, *args, resource.PLURAL)
        else:
            result = await self.call(
                self.custom.list_namespaced_custom_object, *args, namespace, resource.PLURAL
            )
        return result

    async def patch_model(
        self, namespace: str, name: str, body: Obj | list[Obj], *, status: bool = False
    ) -> Obj:
        """A JSON merge patch (a dict) or a JSON patch (a list of operations)."""
        fn = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        result: Obj = await self.call(
            fn,
            resource.GROUP,
            resource.VERSION,
            namespace,
            resource.PLURAL,
            name,
            body,
            _content_type=JSON_PATCH if isinstance(body, list) else MERGE_PATCH,
        )
        return result

    async def watch_models(self, namespace: str | None, resource_version: str) -> AsyncGenerator[Obj]:
        """Events after ``resource_version`` until the server ends the stream; bookmarks included."""
        common: Obj = dict(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=300,
            _preload_content=False,
            _request_timeout=(5, 330),
        )
        args = (resource.GROUP, resource.VERSION)
        if namespace is None:
            start = functools.partial(
                self.custom.list_cluster_custom_object, *args, resource.PLURAL, **common
            )
        else:
            start = functools.partial(
                self.custom.list_namespaced_custom_object, *args, namespace, resource.PLURAL, **common
            )
        async for event in self._stream(start):
            yield event

    async def _stream(self, start: Callable[[], Any]) -> AsyncGenerator[Obj]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Obj | BaseException | None] = asyncio.Queue()
        try:
            response = await loop.run_in_executor(self._calls, start)
        except client.ApiException as exc:
            raise KubeError(exc.status or 0, _message(exc)) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError(0, f"Kubernetes API unreachable: {exc}") from exc

        def pump() -> None:  # on a stream thread: lines → events on the loop
            pending = b""
            try:
                for chunk in response.stream(65536, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except Exception as exc:  # a broken stream ends like a closed one; the caller re-watches
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        pumping = loop.run_in_executor(self._streams, pump)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):  # broken mid-flight: the caller resumes from its rv
                    log.info("watch stream broke (%s); resuming", item)
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError, OSError):  # ValueError: the stream already ended
                response.shutdown()  # wakes the stream thread if it is still reading
            response.release_conn()
            await asyncio.wait({pumping}, timeout=5)

    # --- Events and Leases ----------------------------------------------------------------
    async def create_event(self, namespace: str, body: Obj) -> Obj:
        result: Obj = await self.call(
            self.core.create_namespaced_event, namespace, body, _preload_content=False
        )
        return result

    async def label_pod(self, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        """Set (a value) or remove (None) labels on a pod, by JSON merge patch."""
        await self.call(
            self.core.patch_namespaced_pod, name, namespace, {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH, _preload_content=False,
        )  # fmt: skip

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        try:
            result: Obj = await self.call(
                self.coordination.read_namespaced_lease, name, namespace, _preload_content=False
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def create_lease(self, namespace: str, body: Obj) -> Obj:
        result: Obj = await self.call(
            self.coordination.create_namespaced_lease, namespace, body, _preload_content=False
        )
        return result

    async def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        result: Obj = await self.call(
            self.coordination.replace_namespaced_lease, name, namespace, body, _preload_content=False
        )
        return result

    # --- ConfigMaps (the node keys' store) -----------------------------------------------------
    async def get_configmap(self, namespace: str, name: str) -> Obj | None:
        try:
            result: Obj = await self.call(
                self.core.read_namespaced_config_map, name, namespace, _preload_content=False
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def create_configmap(self, namespace: str, body: Obj) -> Obj:
        result: Obj = await self.call(
            self.core.create_namespaced_config_map, namespace, body, _preload_content=False
        )
        return result

    async def patch_configmap(self, namespace: str, name: str, patch: Obj) -> Obj:
        result: Obj = await self.call(
            self.core.patch_namespaced_config_map, name, namespace, patch,
            _content_type=MERGE_PATCH, _preload_content=False,
        )  # fmt: skip
        return result

    # --- Nodes and the agents' pods (what a node claims is checked against them) ----------------
    async def get_node(self, name: str) -> Obj | None:
        try:
            result: Obj = await self.call(self.core.read_node, name, _preload_content=False)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list_pods(self, namespace: str, label_selector: str, field_selector: str) -> list[Obj]:
        result: Obj = await self.call(
            self.core.list_namespaced_pod, namespace, label_selector=label_selector,
            field_selector=field_selector, _preload_content=False,
        )  # fmt: skip
        items: list[Obj] = result.get("items") or []
        return items
