"""A request's tenancy: whose turn it takes in a busy model's queue, at which priority, with which
time-to-first-token objective — from its API key, and the headers the key allows.

- Tenant: the key's ``tenant`` (default: its name); ``x-llamafleet-tenant`` where the key has
  ``tenantHeader: true`` (a trusted upstream gateway naming its own callers); "anonymous" without keys.
- Priority: the key's ``priority`` (default standard); ``x-llamafleet-priority`` may ask for another
  one the key lists in ``priorities``.
- Objective: ``x-llamafleet-ttft-objective-ms`` (llm-d's ``x-slo-ttft-ms`` too): refuse at once when
  the predicted wait for a slot already exceeds it (balancer.py).

A header the key does not allow is refused (403), a malformed one too (400): a request never waits
at another priority or as another tenant than its caller meant.
"""

from __future__ import annotations

import math

from controlplane.gateway.access.api_keys import ApiKey
from controlplane.gateway.balancer.fair_queue import PRIORITIES, Tenancy
from llamafleet.core.errors import Forbidden, InvalidRequest

TENANT_HEADER = "x-llamafleet-tenant"
PRIORITY_HEADER = "x-llamafleet-priority"
OBJECTIVE_HEADERS = ("x-llamafleet-ttft-objective-ms", "x-slo-ttft-ms")
TENANCY_HEADERS = (TENANT_HEADER, PRIORITY_HEADER, *OBJECTIVE_HEADERS)
_TENANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def tenancy_of(key: ApiKey, headers: dict[str, str]) -> Tenancy:
    """``headers``: the request's, lower-cased."""
    tenant = key.team
    named = headers.get(TENANT_HEADER)
    if named is not None:
        if not key.tenant_header:
            raise Forbidden(f"API key {key.name!r} may not name a tenant ({TENANT_HEADER}); set tenantHeader")
        if not 0 < len(named) <= 63 or not set(named) <= _TENANT_CHARS:
            raise InvalidRequest(
                f"{TENANT_HEADER} must be 1 to 63 letters, digits, '_', '.' or '-'", TENANT_HEADER
            )
        tenant = named
    priority = key.priority
    asked = headers.get(PRIORITY_HEADER)
    if asked is not None:
        if asked not in PRIORITIES:
            raise InvalidRequest(f"{PRIORITY_HEADER} must be one of {', '.join(PRIORITIES)}", PRIORITY_HEADER)
        if asked != key.priority and asked not in key.priorities:
            raise Forbidden(f"API key {key.name!r} may not ask for priority {asked!r}")
        priority = asked
    objective = 0.0
    for name in OBJECTIVE_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            objective = float(value) / 1000
        except ValueError:
            objective = -1.0
        if not (objective > 0 and math.isfinite(objective)):
            raise InvalidRequest(f"{name} must be a positive number of milliseconds", name)
        break
    return Tenancy(tenant, key.weight, priority, objective)
