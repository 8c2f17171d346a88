"""Discovery for the emulator: /version, /api, /apis, APIResourceLists and OpenAPI v3 documents.

kubectl maps kinds to resources from these (legacy discovery: it falls back to it when the
aggregated form is not offered), and decides from the OpenAPI v3 document whether the server
validates fields itself (the ``fieldValidation`` parameter on PATCH).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.support.kubeapi.store import Obj, Resource

if TYPE_CHECKING:
    from tests.support.kubeapi.server import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def builtin_resources() -> list[Resource]:
    return [
        Resource("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), True),
        Resource("", "v1", "events", "Event", True, "event", ("ev",)),
        # Pods as objects only (labels, for the leader's label): no kubelet runs them here.
        Resource("", "v1", "pods", "Pod", True, "pod", ("po",)),
        Resource("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
        Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
        # Nodes as objects only (labels, for what the control plane believes about a node).
        Resource("", "v1", "nodes", "Node", False, "node", ("no",)),
        Resource(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            False,
            "customresourcedefinition",
            ("crd", "crds"),
            True,
        ),
    ]


def crd_resource(crd: Obj, version: Obj) -> Resource:
    spec, names = crd["spec"], crd["spec"]["names"]
    subresources = version.get("subresources") or {}
    return Resource(
        group=spec["group"],
        version=version["name"],
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular", names["kind"].lower()),
        short_names=tuple(names.get("shortNames", ())),
        status_subresource="status" in subresources,
        scale=subresources.get("scale"),
        schema=(version.get("schema") or {}).get("openAPIV3Schema"),
        printer_columns=tuple(version.get("additionalPrinterColumns", ())),
        categories=tuple(names.get("categories", ())),
    )


def _resource_entry(res: Resource) -> list[Obj]:
    entries = [
        {
            "name": res.plural,
            "singularName": res.singular,
            "namespaced": res.namespaced,
            "kind": res.kind,
            "verbs": VERBS,
            "shortNames": list(res.short_names),
            "categories": list(res.categories),
        }
    ]
    if res.status_subresource:
        entries.append(
            {
                "name": f"{res.plural}/status",
                "singularName": "",
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    if res.scale:
        entries.append(
            {
                "name": f"{res.plural}/scale",
                "singularName": "",
                "namespaced": res.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }
        )
    return entries


def _openapi(res_list: list[Resource]) -> Obj:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for res in res_list:
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        prefix = f"/apis/{res.group}/{res.version}" if res.group else "/api/v1"
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        params = [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        ]
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {}}}
        paths[f"{prefix}{scope}/{res.plural}"] = {"post": op, "get": op}
        paths[f"{prefix}{scope}/{res.plural}/{{name}}"] = {"get": op, "put": op, "patch": op, "delete": op}
        key = (
            ".".join(reversed(res.group.split("."))) + f".{res.version}.{res.kind}" if res.group else res.kind
        )
        schemas[key] = {**(res.schema or {"type": "object"}), "x-kubernetes-group-version-kind": [gvk]}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def discovery_routes(emulator: Emulator) -> list[tuple[str, Handler]]:
    def group_versions() -> dict[str, list[Resource]]:
        found: dict[str, list[Resource]] = {}
        for res in emulator.resources.values():
            found.setdefault(res.api_version, []).append(res)
        return found

    async def version(_r: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "32",
                "gitVersion": "v1.32.0-llamafleet-emulator",
                "platform": "linux/amd64",
            }
        )

    async def healthz(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def api(_r: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        )

    async def apis(_r: web.Request) -> web.Response:
        groups: dict[str, list[str]] = {}
        for res in emulator.resources.values():
            if res.group and res.version not in groups.setdefault(res.group, []):
                groups[res.group].append(res.version)
        return web.json_response(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        )

    def resource_list(group_version: str) -> web.Response:
        found = group_versions().get(group_version)
        if not found:
            raise web.HTTPNotFound()
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": [e for r in found for e in _resource_entry(r)],
            }
        )

    async def core(_r: web.Request) -> web.Response:
        return resource_list("v1")

    async def grouped(r: web.Request) -> web.Response:
        return resource_list(f"{r.match_info['group']}/{r.match_info['version']}")

    async def openapi_root(_r: web.Request) -> web.Response:
        paths = {
            ("api/v1" if gv == "v1" else f"apis/{gv}"): {
                "serverRelativeURL": f"/openapi/v3/{'api/v1' if gv == 'v1' else 'apis/' + gv}?hash=0"
            }
            for gv in group_versions()
        }
        return web.json_response({"paths": paths})

    async def openapi_doc(r: web.Request) -> web.Response:
        path = r.match_info["path"]
        gv = "v1" if path == "api/v1" else path.removeprefix("apis/")
        found = group_versions().get(gv)
        if not found:
            raise web.HTTPNotFound()
        return web.json_response(_openapi(found))

    return [
        ("/version", version),
        ("/healthz", healthz),
        ("/readyz", healthz),
        ("/livez", healthz),
        ("/api", api),
        ("/api/v1", core),
        ("/apis", apis),
        ("/apis/{group}/{version}", grouped),
        ("/openapi/v3", openapi_root),
        ("/openapi/v3/{path:.*}", openapi_doc),
    ]
