"""Server-side printing: `kubectl get` asks for a meta.k8s.io/v1 Table built from printer columns."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support.kubeapi.store import Obj, Resource

_FILTER = re.compile(r'^\[\?\(@\.([\w.]+)==["\']([^"\']*)["\']\)\]$')


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: ``.a.b``, ``[N]`` and ``[?(@.k=="v")]`` filters."""
    parts = re.findall(r"\.[\w-]+|\[[^\]]*\]\]?|\[\?\([^)]*\)\]", path)
    values = [obj]
    for part in parts:
        nxt: list[Any] = []
        for value in values:
            if part.startswith("."):
                if isinstance(value, dict) and part[1:] in value:
                    nxt.append(value[part[1:]])
            elif (match := _FILTER.match(part)) and isinstance(value, list):
                key, want = match.groups()
                nxt += [v for v in value if isinstance(v, dict) and str(jsonpath(v, "." + key)) == want]
            elif part[1:-1].isdigit() and isinstance(value, list) and int(part[1:-1]) < len(value):
                nxt.append(value[int(part[1:-1])])
        values = nxt
    if not values:
        return None
    return values[0] if len(values) == 1 else ",".join(str(v) for v in values)


def _age(stamp: str) -> str:
    seconds = int(time.time() - time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) + time.timezone)
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any, column: Obj) -> Any:
    if value is None:
        return None
    if column.get("type") == "date" and isinstance(value, str):
        return _age(value)
    return value


def table(res: Resource, items: list[Obj], resource_version: str) -> Obj:
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    printer = list(res.printer_columns) or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    columns += [
        {
            "name": c["name"],
            "type": c["type"],
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in printer
    ]
    rows = [
        {
            "cells": [o["metadata"]["name"], *(_cell(jsonpath(o, c["jsonPath"]), c) for c in printer)],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
