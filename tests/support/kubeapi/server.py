"""A Kubernetes API server emulator for tests: real HTTP on loopback, the REST semantics our code uses.

What it serves (faithful to the real API server for these): legacy discovery (/api, /apis,
APIResourceLists with the right groupVersion), /version, OpenAPI v3 discovery with the
``fieldValidation`` parameter (so `kubectl apply` validates on the server), list with ``kind`` and
a resourceVersion, watch as a stream of JSON events resumable from a resourceVersion (410 Gone
as an ERROR event after compaction, bookmarks when asked), label and field selectors, create
(201), get, update (409 on a stale resourceVersion), JSON merge patch and JSON patch, the
status subresource (status writes change only status; spec writes never change status), the
scale subresource (autoscaling/v1 Scale), generation bumps on spec changes, finalizers and
deletionTimestamp, structural-schema pruning, defaulting and validation of CRs, server-side
printing (Table) from printer columns, CRD registration, Namespaces, Leases and Events.

What it does NOT simulate (see docs/KUBERNETES.md): controllers (no garbage collection by
ownerReferences, no namespace deletion cascade), admission (webhooks, quotas, RBAC: every
request is allowed), CEL validation rules, server-side apply, strategic merge patch (415, as
for custom resources on a real server), protobuf, aggregated discovery, pagination (``limit``
is ignored), and HA (one process; a restart loses everything).

Test-only endpoints under /emulator/: ``POST break-watches[?hold_s=S]`` (end every open watch
stream; new ones wait S seconds),
``POST compact`` (forget history: resuming a watch from before now is 410 Gone),
``GET writes`` (write requests by verb and resource), ``POST reset-writes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
from aiohttp import web

from tests.support.kubeapi import schema as schemas
from tests.support.kubeapi.discovery import builtin_resources, crd_resource, discovery_routes
from tests.support.kubeapi.store import ApiError, Event, Obj, Resource, Store, Watcher, now
from tests.support.kubeapi.tables import table

BOOKMARK_EVERY_S = 5.0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _selector_matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


_FIELDS = {"metadata.name", "metadata.namespace"}
_EVENT_FIELDS = {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}


_POD_FIELDS = {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"}  # fmt: skip


def _field_matches(obj: Obj, selector: str) -> bool:
    """Field selectors the real server accepts: metadata.name/namespace everywhere, more on Events
    and Pods."""
    kind = obj.get("kind")
    allowed = _FIELDS | (_EVENT_FIELDS if kind == "Event" else _POD_FIELDS if kind == "Pod" else set())
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if key not in allowed:
            raise ApiError(400, "BadRequest", f'"{key}" is not a known field selector')
        found: Any = obj
        for part in key.split("."):
            found = found.get(part, "") if isinstance(found, dict) else ""
        if (str(found) == value) == negate:
            return False
    return True


class Emulator:
    def __init__(self, crds: list[Obj] | None = None, history: int = 50_000) -> None:
        self.store = Store(history)
        self.resources: dict[tuple[str, str, str], Resource] = {}  # (group, version, plural)
        for res in builtin_resources():
            self.resources[(res.group, res.version, res.plural)] = res
        for ns in ("default", "kube-system"):
            self.store.create(self._res("", "v1", "namespaces"), "", {"metadata": {"name": ns}})
        for crd in crds or []:
            self._register_crd(self._res("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd)
        self.store.writes.clear()
        self.watch_hold_until = 0.0

    def _res(self, group: str, version: str, plural: str) -> Resource:
        res = self.resources.get((group, version, plural))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        return res

    def _register_crd(self, res: Resource, crd: Obj) -> Obj:
        created = self.store.create(res, "", crd)
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                new = crd_resource(crd, version)
                self.resources[(new.group, new.version, new.plural)] = new
        created["status"] = {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": now(), "message": ""}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ],
            "acceptedNames": crd["spec"]["names"],
        }
        return self.store.update(res, "", created["metadata"]["name"], created, "status")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/emulator/break-watches", self._break_watches)
        app.router.add_post("/emulator/compact", self._compact)
        app.router.add_get("/emulator/writes", self._writes)
        app.router.add_post("/emulator/reset-writes", self._reset_writes)
        for path, handler in discovery_routes(self):
            app.router.add_get(path, handler)
        app.router.add_route("*", "/api/v1/{rest:.*}", self._core)
        app.router.add_route("*", "/apis/{group}/{version}/{rest:.*}", self._grouped)
        return app

    # --- test controls -------------------------------------------------------------------
    async def _break_watches(self, request: web.Request) -> web.Response:
        """End every watch; with ``hold_s``, new watches wait that long (writes meanwhile are missed)."""
        hold = float(request.query.get("hold_s", "0"))
        self.watch_hold_until = asyncio.get_running_loop().time() + hold
        return web.json_response({"broken": self.store.break_watches()})

    async def _compact(self, _request: web.Request) -> web.Response:
        self.store.compact()
        return web.json_response({"compactedAt": self.store.rv})

    async def _writes(self, _request: web.Request) -> web.Response:
        return web.json_response(self.store.writes)

    async def _reset_writes(self, _request: web.Request) -> web.Response:
        self.store.writes.clear()
        return web.json_response({})

    # --- REST ----------------------------------------------------------------------------
    async def _core(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, "", "v1", request.match_info["rest"])

    async def _grouped(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._dispatch(request, info["group"], info["version"], info["rest"])

    async def _dispatch(
        self, request: web.Request, group: str, version: str, rest: str
    ) -> web.StreamResponse:
        try:
            res, namespace, name, sub = self._parse(group, version, rest.strip("/").split("/"))
            return await self._handle(request, res, namespace, name, sub)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)

    def _parse(self, group: str, version: str, parts: list[str]) -> tuple[Resource, str | None, str, str]:
        if parts[0] == "namespaces" and len(parts) >= 3:
            namespaced = self.resources.get((group, version, parts[2]))
            if namespaced is not None and namespaced.namespaced:
                name, sub = [*parts[3:], "", ""][:2]
                return namespaced, parts[1], name, sub
        res = self._res(group, version, parts[0])
        name, sub = [*parts[1:], "", ""][:2]
        return res, None, name, sub

    async def _handle(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str
    ) -> web.StreamResponse:
        method = request.method
        store = self.store
        if res.namespaced and namespace is not None:
            store.get(self._res("", "v1", "namespaces"), "", namespace)  # 404 for a missing namespace
        if not name:
            if method == "GET":
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, res, namespace)
                return self._list(request, res, namespace)
            if method == "POST":
                store.count("create", res)
                return await self._create(request, res, namespace or "")
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection here")
        ns = namespace or ""
        if sub not in ("", "status", "scale") or (sub == "scale" and not res.scale):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if sub == "status" and not res.status_subresource and res.group:
            raise ApiError(404, "NotFound", "the server could not find the requested resource (status)")
        if method == "GET":
            obj = store.get(res, ns, name)
            return web.json_response(self._scale(res, obj) if sub == "scale" else obj)
        if method == "DELETE":
            store.count("delete", res)
            return web.json_response(store.delete(res, ns, name))
        if method in ("PUT", "PATCH"):
            store.count("update" if method == "PUT" else "patch", res, sub)
            return await self._write(request, res, ns, name, sub)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _list(self, request: web.Request, res: Resource, namespace: str | None) -> web.Response:
        items = self._selected(request, self.store.list(res, namespace))
        rv = str(self.store.rv)
        if "as=Table" in request.headers.get("Accept", ""):
            return web.json_response(table(res, items, rv))
        return web.json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    def _selected(self, request: web.Request, items: list[Obj]) -> list[Obj]:
        labels, fields = request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
        return [
            o
            for o in items
            if _selector_matches(o["metadata"].get("labels") or {}, labels) and _field_matches(o, fields)
        ]

    async def _body(self, request: web.Request) -> Any:
        if "protobuf" in request.content_type:
            raise ApiError(
                415, "UnsupportedMediaType", "the emulator speaks JSON only (protobuf is not simulated)"
            )
        try:
            return json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body is not valid JSON: {exc}") from exc

    def _admit(self, request: web.Request, res: Resource, obj: Obj, part: str | None = None) -> Obj:
        """Prune, default and validate a custom resource (the whole object or one top-level part)."""
        if res.schema is None:
            return obj
        root = res.schema
        target, where = (obj, "") if part is None else (obj.get(part), part)
        sub_schema = root if part is None else root.get("properties", {}).get(part, {})
        target, dropped = schemas.prune(target, sub_schema, where)
        if dropped and request.query.get("fieldValidation") == "Strict":
            unknown = ", ".join(f'unknown field "{d}"' for d in dropped)
            raise ApiError(400, "BadRequest", f"strict decoding error: {unknown}")
        target = schemas.default(target, sub_schema)
        problems = schemas.validate(target, sub_schema)
        if problems:
            name = obj.get("metadata", {}).get("name", "")
            prefix = f"{where}." if where else ""
            detail = ", ".join(f"{prefix}{p}" for p in problems)
            raise ApiError(422, "Invalid", f'{res.kind}.{res.group} "{name}" is invalid: {detail}')
        if part is None:
            return target  # type: ignore[no-any-return]
        obj[part] = target
        return obj

    async def _create(self, request: web.Request, res: Resource, namespace: str) -> web.Response:
        obj = await self._body(request)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        if res.namespaced and not namespace:
            raise ApiError(405, "MethodNotAllowed", "create a namespaced object in its namespace")
        if res.namespaced:
            self.store.get(self._res("", "v1", "namespaces"), "", namespace)
            body_ns = obj.get("metadata", {}).get("namespace")
            if body_ns and body_ns != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
        obj = self._admit(request, res, obj)
        if res.plural == "customresourcedefinitions":
            created = self._register_crd(res, obj)
        elif request.query.get("dryRun") == "All":
            created = obj
        else:
            created = self.store.create(res, namespace, obj)
        return web.json_response(created, status=201)

    async def _write(self, request: web.Request, res: Resource, ns: str, name: str, sub: str) -> web.Response:
        current = self.store.get(res, ns, name)
        body = await self._body(request)
        base = self._scale(res, current) if sub == "scale" else current
        if request.method == "PUT":
            new = body
        else:
            kind = request.content_type
            if kind == "application/merge-patch+json":
                new = merge_patch(base, body)
            elif kind == "application/json-patch+json":
                try:
                    new = jsonpatch.apply_patch(base, body)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
            elif kind == "application/strategic-merge-patch+json" and not res.schema:
                new = merge_patch(base, body)  # built-in types: close enough for leases and events
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format "
                    f"- accepted media types include: application/json-patch+json, "
                    f"application/merge-patch+json ({kind})",
                )
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        if sub == "scale":
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", "Scale.spec.replicas: Invalid value: must be an integer >= 0")
            assert res.scale is not None
            stated = (new.get("metadata") or {}).get("resourceVersion")
            new = copy.deepcopy(current)
            _set_path(new, res.scale["specReplicasPath"], replicas)
            new["metadata"]["resourceVersion"] = stated
            sub = ""
        # A patch is applied to the current object, so it conflicts only when it sets a different
        # metadata.resourceVersion itself (optimistic locking on request), as on the real server.
        new = self._admit(request, res, new, "status" if sub == "status" else None)
        updated = self.store.update(res, ns, name, new, sub)
        return web.json_response(self._scale(res, updated) if request.path.endswith("/scale") else updated)

    def _scale(self, res: Resource, obj: Obj) -> Obj:
        assert res.scale is not None
        from tests.support.kubeapi.tables import jsonpath

        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": jsonpath(obj, res.scale["specReplicasPath"]) or 0},
            "status": {
                "replicas": jsonpath(obj, res.scale["statusReplicasPath"]) or 0,
                "selector": jsonpath(obj, res.scale.get("labelSelectorPath", "")) or "",
            },
        }

    async def _watch(self, request: web.Request, res: Resource, namespace: str | None) -> web.StreamResponse:
        delay = self.watch_hold_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        rv_text = request.query.get("resourceVersion", "")
        as_table = "as=Table" in request.headers.get("Accept", "")
        watcher = Watcher(res, namespace)
        try:
            if rv_text in ("", "0"):
                backlog = [Event(self.store.rv, "ADDED", o) for o in self.store.list(res, namespace)]
            else:
                backlog = [
                    e
                    for e in self.store.events_since(res, int(rv_text))
                    if namespace is None or e.obj["metadata"].get("namespace") == namespace
                ]
        except ApiError as exc:
            backlog = [Event(0, "ERROR", exc.status())]
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_text!r}") from None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        self.store.watchers.append(watcher)
        timeout = float(request.query.get("timeoutSeconds", "0") or 0) or None
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None

        async def send(kind: str, obj: Obj) -> None:
            if as_table and kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = table(res, [obj], obj["metadata"].get("resourceVersion", ""))
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            for event in backlog:
                if event.type == "ERROR" or self._event_selected(request, event):
                    await send(event.type, event.obj)
                if event.type == "ERROR":
                    return response
            while deadline is None or loop.time() < deadline:
                wait = BOOKMARK_EVERY_S if deadline is None else min(BOOKMARK_EVERY_S, deadline - loop.time())
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), max(wait, 0.01))
                except TimeoutError:
                    if bookmarks:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": res.kind,
                                "apiVersion": res.api_version,
                                "metadata": {"resourceVersion": str(self.store.rv)},
                            },
                        )
                    continue
                if event is None:  # broken on purpose: drop the connection without a clean end
                    with contextlib.suppress(Exception):
                        request.transport.close()  # type: ignore[union-attr]
                    return response
                if self._event_selected(request, event):
                    await send(event.type, event.obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.remove(watcher)
        return response

    def _event_selected(self, request: web.Request, event: Event) -> bool:
        return bool(self._selected(request, [event.obj]))


def _set_path(obj: Obj, path: str, value: Any) -> None:
    keys = path.strip(".").split(".")
    for key in keys[:-1]:
        obj = obj.setdefault(key, {})
    obj[keys[-1]] = value
