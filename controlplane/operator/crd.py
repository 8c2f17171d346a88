"""Generates the `models.llamafleet.io` CRD from the same pydantic models as the models file.

`make crd` writes it to deploy/helm/llamafleet/crds/; a test fails when the committed file is
stale, so the file schema and the CRD cannot drift. Pydantic's JSON schema is turned into a
Kubernetes *structural* schema (OpenAPI v3): references inlined, ``anyOf`` with null →
``nullable``, numeric exclusive bounds → a bound plus a boolean, an int
or a keyword → ``x-kubernetes-int-or-string`` plus a CEL rule, no ``additionalProperties: false``
(the API server prunes unknown fields instead), and the ModelSpec validators as CEL rules.
"""

from __future__ import annotations

from typing import Any

from controlplane.domain import AUTOSCALING_MIN_ABOVE_MAX, DRAFT_MODEL_WITH_DRAFT, SPLIT_NEEDS_ALL_LAYERS
from controlplane.operator import resource

_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _structural({**defs[node["$ref"].rsplit("/", 1)[1]], **_without(node, "$ref")}, defs)
    if "anyOf" in node:
        return _any_of(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema's number form → OpenAPI v3's: the bound plus a boolean (Kubernetes reads that)
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs)
    elif node.get("type") == "object" and "properties" not in node:
        out["x-kubernetes-preserve-unknown-fields"] = True  # free-form (the recommendation)
    return out


def _without(node: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in keys}


def _any_of(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    rest = _without(node, "anyOf", *_DROP)
    if len(options) == 1:  # X | None
        return {**_structural({**options[0], **rest}, defs), "nullable": True}
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:  # int | Literal["auto"]: one field, a CEL rule decides
        number = next(o for o in options if o["type"] == "integer")
        words = [w for o in options if o["type"] == "string" for w in o.get("enum", [o.get("const")])]
        bound = f"self >= {number['minimum']}" if "minimum" in number else "true"
        allowed = " || ".join(f"self == '{w}'" for w in words)
        return {
            **rest,
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                {
                    "rule": f"type(self) == int ? {bound} : ({allowed})",
                    "message": f"an integer ({bound.replace('self', 'value')}) or one of {words}",
                }
            ],
        }
    raise ValueError(f"no structural form for anyOf {node['anyOf']}")


def spec_schema() -> dict[str, Any]:
    source = resource.spec_fields()
    spec = _structural(source, source.get("$defs", {}))
    adapters = spec["properties"]["adapters"]
    adapters["x-kubernetes-list-type"] = "map"  # the API server rejects duplicate adapter names
    adapters["x-kubernetes-list-map-keys"] = ["name"]
    spec["properties"]["autoscaling"]["x-kubernetes-validations"] = [
        {"rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
         "message": AUTOSCALING_MIN_ABOVE_MAX}
    ]  # fmt: skip
    spec["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.allowSplit) || !self.allowSplit || !has(self.gpuLayers) "
            "|| self.gpuLayers == 'auto' || self.gpuLayers == -1",
            "message": SPLIT_NEEDS_ALL_LAYERS,
            "fieldPath": ".gpuLayers",
        },
        {
            "rule": "(has(self.speculative) && self.speculative == 'draft') == has(self.draftModel)",
            "message": DRAFT_MODEL_WITH_DRAFT,
        },
    ]
    return spec


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def status_schema() -> dict[str, Any]:
    """Written by the operator only, so no defaults: an absent field means "not known yet"."""
    source = resource.ModelResourceStatus.model_json_schema(by_alias=True)
    status: dict[str, Any] = _without_defaults(_structural(source, source.get("$defs", {})))
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return status


PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Ready replicas",
    },
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas", "description": "Desired replicas"},
    {"name": "Status", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Nodes", "type": "string", "jsonPath": ".status.nodes"},
    {"name": "GPU-Layers", "type": "string", "jsonPath": ".status.gpuLayers"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    root = {
        "type": "object",
        "description": 'A GGUF model served by llamafleet; clients use its metadata.name as "model".',
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() <= 63",
                "message": "a Model's name is the id clients use: at most 63 characters",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.CRD_NAME},
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.KIND,
                "listKind": f"{resource.KIND}List",
                "plural": resource.PLURAL,
                "singular": resource.SINGULAR,
                "shortNames": list(resource.SHORT_NAMES),
                "categories": ["llamafleet"],
            },
            "versions": [
                {
                    "name": resource.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
