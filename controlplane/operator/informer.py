"""A cache of Model objects kept current by list + watch, as client-go's reflector does.

List once, then watch from the list's resourceVersion; every event (bookmarks too) advances the
resourceVersion, so a stream that breaks mid-flight is resumed exactly where it stopped, and no
update is lost. A 410 Gone (the server no longer has history that old) means: list again and
replace the cache wholesale. Any other failure is retried with backoff. ``on_change`` is called
after every change to the cache (the caller coalesces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from controlplane.operator.kube import Kube, KubeError, Obj

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class ModelInformer:
    def __init__(self, kube: Kube, namespace: str | None, on_change: Callable[[], None]) -> None:
        self._kube = kube
        self._namespace = namespace  # None: all namespaces
        self._on_change = on_change
        self.objects: dict[Key, Obj] = {}
        self.synced = False  # a complete list has been loaded
        self.resource_version = ""
        self.relists = 0  # lists after the first (410 Gone)
        self.resumes = 0  # watches resumed from a resourceVersion after a broken stream

    @property
    def scope(self) -> str:
        return f"namespace {self._namespace}" if self._namespace else "all namespaces"

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch(stop)
                backoff = 0.5
                if not stop.is_set():
                    self.resumes += 1
            except KubeError as exc:
                if exc.status == 410:
                    log.info("Model watch (%s): history expired (410 Gone); listing again", self.scope)
                    need_list = True
                    self.relists += 1
                    continue
                log.warning(
                    "Model list/watch (%s) failed: %s; retrying in %.1fs", self.scope, exc.message, backoff
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)

    async def _list(self) -> None:
        listing = await self._kube.list_models(self._namespace)
        self.objects = {key_of(o): o for o in listing.get("items", [])}
        self.resource_version = listing["metadata"]["resourceVersion"]
        self.synced = True
        log.info(
            "Models (%s): %d listed at resourceVersion %s",
            self.scope,
            len(self.objects),
            self.resource_version,
        )
        self._on_change()

    async def _watch(self, stop: asyncio.Event) -> None:
        stream = self._kube.watch_models(self._namespace, self.resource_version)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(anext(stream))
                await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    return
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    return  # the server ended the stream (timeout): resume from resource_version
                self._apply(event)
        finally:
            stopper.cancel()
            await stream.aclose()

    def _apply(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise KubeError(int(obj.get("code") or 0), str(obj.get("message", "watch error")))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            self.objects.pop(key_of(obj), None)
        elif kind in ("ADDED", "MODIFIED"):
            self.objects[key_of(obj)] = obj
        else:
            log.warning("Model watch: ignoring an event of type %r", kind)
            return
        self._on_change()
