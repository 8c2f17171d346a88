"""Headers the gateway sets on the requests it forwards to an engine, beside the replica secret.

The gateway builds every engine request's headers itself (a client's are never passed through), so an
engine can trust these as it trusts the secret:

- ``x-llamafleet-tenant``: whose request it is (the tenant the gateway's fair queue served);
- ``x-llamafleet-preempts``: a tenant holding more than its fair share of the model's slots, one of
  whose running requests the engine may suspend for this one when no slot is free (the gateway's fair
  queue, docs/BALANCER.md "Many teams").
"""

from __future__ import annotations

TENANT_HEADER = "x-llamafleet-tenant"
PREEMPTS_HEADER = "x-llamafleet-preempts"


def fairness_headers(tenant: str, preempts: str) -> dict[str, str]:
    """The headers for a request of ``tenant`` that may suspend one of ``preempts``' ("": none)."""
    headers = {TENANT_HEADER: tenant} if tenant else {}
    if preempts:
        headers[PREEMPTS_HEADER] = preempts
    return headers
