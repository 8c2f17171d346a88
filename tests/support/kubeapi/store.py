"""The emulator's object store: resource versions, generations, finalizers, watch history.

Semantics follow the real API server (etcd3 storage, generic registry):
- one cluster-wide, strictly increasing resourceVersion; every write gets a new one;
- ``metadata.generation`` starts at 1 and grows when anything but metadata and status changes
  (resources with a status subresource), or on any non-metadata change (the others);
- DELETE of an object with finalizers sets ``deletionTimestamp`` (and bumps generation); the
  object goes once its last finalizer is removed;
- optimistic concurrency: an update naming a stale ``resourceVersion`` is a 409 Conflict;
- watches replay events after a given resourceVersion from a bounded history; older ones are
  410 Gone (as after an etcd compaction).
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Resource:
    """One served resource type."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    scale: dict[str, str] | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath
    schema: Obj | None = None  # openAPIV3Schema
    printer_columns: tuple[Obj, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return self.group, self.plural


@dataclass
class Event:
    rv: int
    type: str
    obj: Obj


@dataclass
class Watcher:
    resource: Resource
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _content(obj: Obj, status_subresource: bool) -> Obj:
    """What a generation counts: everything but metadata (and status, when it is a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


class Store:
    def __init__(self, history: int = 50_000) -> None:
        self.rv = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.history: dict[tuple[str, str], deque[Event]] = {}
        self.compacted: dict[tuple[str, str], int] = {}  # events at or below this rv are gone
        self.watchers: list[Watcher] = []
        self.writes: dict[str, int] = {}  # "verb resource[/subresource]" → count
        self._history_len = history

    # --- reads ---------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.objects.get(res.key, {}).get((namespace, name))
        if obj is None:
            what = f"{res.plural}.{res.group}" if res.group else res.plural
            raise ApiError(404, "NotFound", f'{what} "{name}" not found')
        return copy.deepcopy(obj)

    def list(self, res: Resource, namespace: str | None) -> list[Obj]:
        items = self.objects.get(res.key, {})
        return [
            copy.deepcopy(o) for (ns, _), o in sorted(items.items()) if namespace is None or ns == namespace
        ]

    def events_since(self, res: Resource, rv: int) -> list[Event]:
        if rv < self.compacted.get(res.key, 0):
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.compacted[res.key]})")
        return [e for e in self.history.get(res.key, ()) if e.rv > rv]

    # --- writes --------------------------------------------------------------------------
    def count(self, verb: str, res: Resource, sub: str = "") -> None:
        key = f"{verb} {res.plural}" + (f"/{sub}" if sub else "")
        self.writes[key] = self.writes.get(key, 0) + 1

    def create(self, res: Resource, namespace: str, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        items = self.objects.setdefault(res.key, {})
        if (namespace, name) in items:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{name}" already exists')
        if res.namespaced:
            meta["namespace"] = namespace
        meta.pop("deletionTimestamp", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.status_subresource:
            obj.pop("status", None)
        self._write(res, namespace, name, obj, "ADDED")
        return copy.deepcopy(obj)

    def update(self, res: Resource, namespace: str, name: str, new: Obj, sub: str = "") -> Obj:
        """Replace an object (or only its status: ``sub="status"``), with optimistic concurrency."""
        old = self.get(res, namespace, name)
        stated = (new.get("metadata") or {}).get("resourceVersion")
        if stated and stated != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural}.{res.group} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        if sub == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
        else:
            merged = copy.deepcopy(new)
            meta = merged.setdefault("metadata", {})
            for key in ("uid", "creationTimestamp", "generation", "namespace", "name", "deletionTimestamp"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if old.get("metadata", {}).get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(
                old["metadata"].get("finalizers") or []
            ):
                raise ApiError(
                    422, "Invalid", "no new finalizers can be added if the object is being deleted"
                )
            if res.status_subresource:
                merged.pop("status", None)
                if "status" in old:
                    merged["status"] = old["status"]
            merged["apiVersion"], merged["kind"] = res.api_version, res.kind
            if _content(merged, res.status_subresource) != _content(old, res.status_subresource):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        if merged == old:
            return old  # a no-op write: the real API server keeps the resourceVersion
        meta = merged["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(res, namespace, name, merged)
            return merged
        self._write(res, namespace, name, merged, "MODIFIED")
        return copy.deepcopy(merged)

    def delete(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.get(res, namespace, name)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                meta["generation"] = meta.get("generation", 1) + 1
                self._write(res, namespace, name, obj, "MODIFIED")
            return copy.deepcopy(obj)
        self._remove(res, namespace, name, obj)
        return obj

    def _remove(self, res: Resource, namespace: str, name: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        del self.objects[res.key][(namespace, name)]
        self._publish(res, namespace, Event(self.rv, "DELETED", copy.deepcopy(obj)))

    def _write(self, res: Resource, namespace: str, name: str, obj: Obj, kind: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects.setdefault(res.key, {})[(namespace, name)] = obj
        self._publish(res, namespace, Event(self.rv, kind, copy.deepcopy(obj)))

    def _publish(self, res: Resource, namespace: str, event: Event) -> None:
        history = self.history.setdefault(res.key, deque())
        history.append(event)
        while len(history) > self._history_len:
            self.compacted[res.key] = history.popleft().rv
        for watcher in self.watchers:
            if watcher.resource.key == res.key and watcher.namespace in (None, namespace):
                watcher.queue.put_nowait(event)

    # --- fault injection ----------------------------------------------------------------
    def compact(self) -> None:
        """Forget every event so far: a watch resuming from an older resourceVersion gets 410 Gone."""
        for key, history in self.history.items():
            self.compacted[key] = self.rv
            history.clear()

    def break_watches(self) -> int:
        """End every open watch stream mid-flight, as an API server restart or a proxy timeout does."""
        count = len(self.watchers)
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)
        return count
