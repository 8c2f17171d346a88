"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

A candidate takes the Lease when it is free, released, or unrenewed for ``lease_duration_s``
as measured on its *own* clock since it last saw the record change (clocks of different
machines are never compared). The leader renews every ``retry_period_s``; if it cannot renew
for ``renew_deadline_s`` (< lease duration) it stops leading before anyone else can start, and
the process exits so Kubernetes restarts it as a follower: never two leaders acting at once.
A graceful stop releases the Lease (empty holder), so a rolling restart hands over at once.

Reaching the leader: every replica is Ready while it runs (a follower included, so a Deployment
rollout completes and a PodDisruptionBudget can allow a disruption), and the leader labels its own
pod ``llamafleet.io/leader=true`` once it serves; the control plane's gRPC Service selects that label,
so agents and gateways always reach the leader and need no discovery of their own. The label goes
before the Lease is released, and a restarted process removes a label left from before it started
(a leader that lost its Lease and exited), before it reports Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from controlplane.operator.kube import Kube, KubeError
from controlplane.settings import KubernetesSettings
from llamafleet.core.errors import LlamafleetError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# On the leader's pod while it serves; the chart's gRPC Service selects it (tests check they agree).
LEADER_LABEL = "llamafleet.io/leader"


class LeadershipLost(LlamafleetError):
    code = "leadership_lost"


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, settings: KubernetesSettings) -> None:
        self._kube = kube
        self._settings = settings
        self.identity = settings.identity
        self.leading = False
        self.transitions = 0
        self._observed: Obj | None = None  # the lease spec last seen
        self._observed_at = 0.0  # when (our monotonic clock) it last changed

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process leads (True) or ``stop`` is set (False)."""
        s = self._settings
        log.info("waiting to lead: Lease %s/%s as %s", s.lease_namespace, s.lease_name, self.identity)
        holder_logged = ""
        while not stop.is_set():
            try:
                if await self._try_acquire_or_renew():
                    log.info(
                        "leading (Lease %s/%s, transition %d)",
                        s.lease_namespace,
                        s.lease_name,
                        self.transitions,
                    )
                    self.leading = True
                    return True
                holder = (self._observed or {}).get("holderIdentity", "")
                if holder != holder_logged:
                    log.info("following: %s holds the Lease", holder)
                    holder_logged = holder
            except KubeError as exc:
                log.warning("leader election: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.retry_period_s)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until ``stop``; raise LeadershipLost when renewals fail for the renew deadline."""
        s = self._settings
        last_renewed = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.retry_period_s)
            if stop.is_set():
                return
            try:
                renewed = await asyncio.wait_for(self._try_acquire_or_renew(), s.renew_deadline_s)
            except (KubeError, TimeoutError) as exc:
                log.warning("renewing the Lease failed: %s", getattr(exc, "message", "timed out"))
                renewed = False
            if renewed:
                last_renewed = time.monotonic()
            elif time.monotonic() - last_renewed >= s.renew_deadline_s:
                self.leading = False
                raise LeadershipLost(
                    f"lost the Lease {s.lease_namespace}/{s.lease_name} (not renewed for "
                    f"{s.renew_deadline_s:.0f}s); exiting so that a restart rejoins as a follower"
                )

    async def mark_pod(self, leading: bool) -> None:
        """Label this process's pod as the leader's, or remove the label (when ``pod_name`` is set).

        Labelling must work for agents to reach this leader: a refusal (RBAC) is raised. Removing it is
        best effort: a pod that is going away leaves the Service's endpoints anyway."""
        s = self._settings
        if not s.pod_name:
            return
        try:
            await self._kube.label_pod(
                s.lease_namespace, s.pod_name, {LEADER_LABEL: "true" if leading else None}
            )
        except KubeError as exc:
            if leading:
                raise KubeError(
                    exc.status,
                    f"cannot label pod {s.lease_namespace}/{s.pod_name} as the leader's "
                    f"({exc.message}); the control plane needs RBAC to patch its own pod",
                ) from exc
            log.warning("could not remove the leader label from pod %s: %s", s.pod_name, exc.message)
            return
        log.info("pod %s/%s %s", s.lease_namespace, s.pod_name,
                 f"labeled {LEADER_LABEL}=true: the gRPC Service routes here" if leading
                 else f"no longer labeled {LEADER_LABEL}")  # fmt: skip

    async def release(self) -> None:
        """Hand the Lease over now (a graceful stop), so a follower need not wait for it to expire."""
        if not self.leading:
            return
        self.leading = False
        await self.mark_pod(False)
        s = self._settings
        try:
            lease = await self._kube.get_lease(s.lease_namespace, s.lease_name)
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
            await self._kube.replace_lease(s.lease_namespace, s.lease_name, lease)
            log.info("released the Lease %s/%s", s.lease_namespace, s.lease_name)
        except KubeError as exc:
            log.warning("could not release the Lease (followers take over when it expires): %s", exc.message)

    async def _try_acquire_or_renew(self) -> bool:
        s = self._settings
        now = _micro_time()
        lease = await self._kube.get_lease(s.lease_namespace, s.lease_name)
        mine: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(math.ceil(s.lease_duration_s), 1),  # whole seconds in the API
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.lease_name, "namespace": s.lease_namespace},
                "spec": mine,
            }
            try:
                await self._kube.create_lease(s.lease_namespace, body)
            except KubeError as exc:
                if exc.status == 409:
                    return False  # someone else created it first
                raise
            self._observed, self._observed_at = mine, time.monotonic()
            return True
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed, self._observed_at = spec, time.monotonic()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or s.lease_duration_s)
        if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
            return False
        if holder == self.identity:
            mine.update(
                acquireTime=spec.get("acquireTime", now), leaseTransitions=spec.get("leaseTransitions", 0)
            )
        else:
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = mine
        try:
            await self._kube.replace_lease(s.lease_namespace, s.lease_name, lease)
        except KubeError as exc:
            if exc.status == 409:
                return False  # changed under us: look again next round
            raise
        self._observed, self._observed_at = mine, time.monotonic()
        self.transitions = int(mine["leaseTransitions"])
        return True
