"""The Model operator: Model objects → desired state; cluster state → status, Events and finalizers.

Level-triggered: each pass reads every cached Model and the cluster state and converges, so it
does the right thing from any starting point (a restart, a new leader, a missed event). Passes
are coalesced (at most one per ``PASS_EVERY_S``) and recompute only the Models whose inputs
changed; a status is written only when it differs from what the object already says, by a
bounded pool of writers that always sends the latest wanted status: no write storm under churn.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from controlplane.domain import ModelSpec, ReplicaRecord, ScaleStatus
from controlplane.operator import events, resource
from controlplane.operator.informer import Key, ModelInformer
from controlplane.operator.kube import Kube, KubeError
from controlplane.operator.name_policy import NamePolicy
from controlplane.operator.status import Admission, build_status, restored_scaling, same_status
from controlplane.scheduler.fit import context_params, model_recommendation
from controlplane.settings import KubernetesSettings
from controlplane.state.cluster import ClusterState
from controlplane.state.views import model_conditions

log = logging.getLogger(__name__)

PROGRESS_S, PROGRESS_STEP = 5.0, 0.05  # download progress reaches a Model's status this seldom


def _downloading(r: ReplicaRecord) -> bool:
    return r.message.startswith("downloading")


def _share(r: ReplicaRecord) -> float:
    """How far a download is: a fraction of the file, or -1 when its size is unknown (paced by time)."""
    done, total, _ = r.download
    return done / total if total else -1.0


def _steady(r: ReplicaRecord) -> str:
    """A replica's message without its download progress (which _progress_due paces)."""
    return "downloading" if _downloading(r) else r.message


Obj = dict[str, Any]
PASS_EVERY_S = 0.1
_PRIORITY = {"status": 0, "finalizer": 1, "event": 2}  # what people look at first goes first


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class _Write:
    kind: str  # status, finalizer, event
    key: Key
    patch: list[Obj] | None = None  # a JSON patch (finalizers)
    event: events.ModelEvent | None = None


class ModelOperator:
    def __init__(self, kube: Kube, state: ClusterState, settings: KubernetesSettings) -> None:
        self._kube = kube
        self._state = state
        self._settings = settings
        self._changed = asyncio.Event()
        scopes: list[str | None] = list(settings.namespaces) or [None]
        self._names = NamePolicy.parse(settings.model_namespaces)
        self.informers = [ModelInformer(kube, ns, self._changed.set) for ns in scopes]
        self.admissions: dict[Key, Admission] = {}
        self._owner: dict[str, Key] = {}  # model id → the object that serves it
        self._written: dict[Key, Obj] = {}  # the status each object has, as far as we know
        self._wanted: dict[Key, Obj] = {}  # statuses waiting for a writer
        self._signature: dict[Key, object] = {}  # inputs of the last status computed per object
        self._progress: dict[Key, tuple[float, dict[str, float]]] = {}  # downloads as last written
        self._seen: dict[Key, dict[str, events.ReplicaSeen]] = {}
        self._scaled: dict[Key, int | None] = {}  # the autoscaled count last seen, for events
        self._finalizing: dict[Key, list[str]] = {}  # finalizers asked for, until the cache shows them
        self._deleting_since: dict[Key, float] = {}
        self._recommendations: dict[tuple[object, ...], dict[str, Any] | None] = {}
        self._dedupe = events.Deduper()
        # Status first (what `kubectl get/wait` and users look at), then finalizers, then Events.
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Write]] = asyncio.PriorityQueue()
        self._sequence = itertools.count()
        self._queued_status: set[Key] = set()
        self._expected_set = False
        self._scaling_restored = False
        self._parsed: dict[Key, tuple[object, ModelSpec | str]] = {}  # specs by (uid, generation)

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self.informers)

    def objects(self) -> dict[Key, Obj]:
        merged: dict[Key, Obj] = {}
        for informer in self.informers:
            merged.update(informer.objects)
        return merged

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(stop), name=f"models-watch-{informer.scope}")
            for i in range(self._settings.api_workers):
                group.create_task(self._writer(stop), name=f"model-status-writer-{i}")
            group.create_task(self._passes(stop), name="model-operator")

    async def _passes(self, stop: asyncio.Event) -> None:
        seen_version = -1
        while not stop.is_set():
            self._changed.clear()
            if self.synced:
                self.reconcile()
            seen_version = self._state.version
            waiters = {
                asyncio.ensure_future(self._changed.wait()),
                asyncio.ensure_future(self._state.wait_changed(seen_version, 1.0)),
                asyncio.ensure_future(stop.wait()),
            }
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PASS_EVERY_S)  # coalesce a burst into one pass

    def reconcile(self) -> None:
        objects = self.objects()
        self._sync_desired(objects)
        self._sync_finalizers(objects)
        self._sync_status(objects)

    # --- desired state ------------------------------------------------------------------
    def _sync_desired(self, objects: dict[Key, Obj]) -> None:
        claims: dict[str, list[tuple[Key, Obj, ModelSpec]]] = {}
        admissions: dict[Key, Admission] = {}
        parsed: dict[Key, tuple[object, ModelSpec | str]] = {}
        for key, obj in objects.items():
            if obj["metadata"].get("deletionTimestamp"):
                continue
            parsed[key] = self._parse(key, obj)
            spec_or_error = parsed[key][1]
            if isinstance(spec_or_error, str):
                admissions[key] = Admission(key[1], None, "InvalidSpec", spec_or_error)
                continue
            if refused := self._names.refusal(spec_or_error.name, key[0]):
                admissions[key] = Admission(spec_or_error.name, None, "NamespaceNotAllowed", refused)
                continue
            claims.setdefault(spec_or_error.name, []).append((key, obj, spec_or_error))
        self._parsed = parsed
        owner: dict[str, Key] = {}
        for model_id, claimants in claims.items():
            claimants.sort(key=lambda c: (c[1]["metadata"].get("creationTimestamp", ""), c[0][0]))
            holder_key, _, spec = claimants[0]
            owner[model_id] = holder_key
            admissions[holder_key] = Admission(model_id, spec)
            for key, _, _ in claimants[1:]:
                message = (
                    f"the model id {model_id!r} is already served by Model {holder_key[0]}/{model_id}, "
                    f"which is older; rename this one (its metadata.name is the id clients use)"
                )
                admissions[key] = Admission(model_id, None, "NameConflict", message)
                self._event(key, "Warning", "NameConflict", message)
                self._event(
                    holder_key,
                    "Warning",
                    "NameConflict",
                    f"Model {key[0]}/{model_id} asks for the same id and is not served",
                )
        for key, admission in admissions.items():
            if admission.reason in ("InvalidSpec", "NamespaceNotAllowed"):
                self._event(key, "Warning", admission.reason, admission.message)
        self.admissions, self._owner = admissions, owner
        if not self._expected_set:  # a new leader: wait for the nodes the last one placed replicas on
            self._expected_set = True
            self._state.expected_nodes = frozenset(
                r["node"]
                for obj in objects.values()
                for r in (obj.get("status") or {}).get("replicaStatuses") or []
                if r.get("node")
            )
        self._restore_scaling(objects, admissions)
        self._state.set_models(a.spec for a in admissions.values() if a.spec is not None)

    def _restore_scaling(self, objects: dict[Key, Obj], admissions: dict[Key, Admission]) -> None:
        """A new leader carries on from the replica counts the last one's autoscaler wrote."""
        if self._scaling_restored:
            return
        self._scaling_restored = True
        for key, admission in admissions.items():
            spec = admission.spec
            if spec is None or spec.autoscaling is None or spec.autoscaling.mode != "Internal":
                continue
            restored = restored_scaling(objects[key])
            if restored is not None:
                self._state.restore_scale(spec.name, restored)
                log.info("Model %s/%s: carrying on with %d replica(s) from the last leader's autoscaler",
                         key[0], key[1], restored.replicas)  # fmt: skip

    def _parse(self, key: Key, obj: Obj) -> tuple[object, ModelSpec | str]:
        """The object's spec, or why it is invalid; parsed once per (uid, generation)."""
        version = (obj["metadata"].get("uid"), obj["metadata"].get("generation"))
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == version:
            return cached
        try:
            return version, resource.model_spec(obj)
        except ValidationError as exc:
            return version, resource.validation_message(exc)

    # --- finalizers and deletion ----------------------------------------------------------
    def _sync_finalizers(self, objects: dict[Key, Obj]) -> None:
        for key in [k for k in self._finalizing if k not in objects]:
            del self._finalizing[key]
        for key, obj in objects.items():
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            target = self._finalizing.get(key)
            if target is not None and target != finalizers:
                continue  # our write is in flight, or done and its echo is not here yet
            self._finalizing.pop(key, None)
            if not meta.get("deletionTimestamp"):
                self._deleting_since.pop(key, None)
                if resource.FINALIZER not in finalizers:
                    self._finalize(key, finalizers, [*finalizers, resource.FINALIZER])
            elif resource.FINALIZER in finalizers and self._drained(key):
                self._finalize(key, finalizers, [f for f in finalizers if f != resource.FINALIZER])

    def _finalize(self, key: Key, current: list[str], wanted: list[str]) -> None:
        """A JSON patch conditioned on the finalizers alone: status writes in between do not conflict,
        another controller changing the list does (409, and the next pass retries)."""
        self._finalizing[key] = wanted
        path = "/metadata/finalizers"
        if not current:
            body = [{"op": "add", "path": path, "value": wanted}]
        else:
            body = [
                {"op": "test", "path": path, "value": current},
                {"op": "replace", "path": path, "value": wanted},
            ]
        self._enqueue(_Write("finalizer", key, patch=body))

    def _drained(self, key: Key) -> bool:
        """A deleted Model may go once nothing runs for it (or its grace period is over)."""
        model_id = key[1]
        since = self._deleting_since.setdefault(key, time.monotonic())
        if self._owner.get(model_id) not in (None, key):
            return True  # another Model serves this id: nothing of ours runs
        placed = any(r.model == model_id for r in self._state.replicas.values())
        running = any(
            report.model == model_id
            for node in self._state.nodes.values()
            if node.connected
            for report in node.running.values()
        )
        if not placed and not running:
            log.info("Model %s/%s: replicas stopped; removing the finalizer", *key)
            return True
        if time.monotonic() - since > self._settings.drain_grace_s:
            self._event(
                key,
                "Warning",
                "DrainTimeout",
                f"replicas still running after {self._settings.drain_grace_s:.0f}s; deleting anyway",
            )
            return True
        return False

    # --- status -------------------------------------------------------------------------
    def _sync_status(self, objects: dict[Key, Obj]) -> None:
        state = self._state
        by_model: dict[str, list[ReplicaRecord]] = {}
        for replica in state.replicas.values():
            by_model.setdefault(replica.model, []).append(replica)
        now = _stamp()
        for key, obj in objects.items():
            status = self._status_for(key, obj, by_model, now)
            if status is None:
                continue
            self._wanted[key] = status
            if key not in self._queued_status:
                self._queued_status.add(key)
                self._enqueue(_Write("status", key))
        for key in [k for k in self._signature if k not in objects]:
            for table in (
                self._signature,
                self._written,
                self._wanted,
                self._seen,
                self._scaled,
                self._progress,
            ):
                table.pop(key, None)

    def _status_for(
        self, key: Key, obj: Obj, by_model: dict[str, list[ReplicaRecord]], now: str
    ) -> Obj | None:
        """The status to write for one Model, or None when it has nothing new to say."""
        state = self._state
        admission = self.admissions.get(key)
        if admission is None or obj["metadata"].get("deletionTimestamp"):
            return None
        spec = admission.spec
        replicas = tuple(by_model.get(spec.name, ())) if spec else ()
        pending = state.pending_reasons.get(key[1]) if spec else None
        if spec is not None and not self._placement_tried(spec, replicas, pending):
            return None  # the reconciler has not acted on this spec yet: one write later, not two
        split_plan = state.split_plans.get(key[1], "")
        scaling = state.scaling.get(spec.name) if spec is not None and spec.autoscaling else None
        signature = (
            obj["metadata"].get("generation"), admission, pending, split_plan,
            (scaling.replicas, scaling.changed_unix) if scaling else None,
            tuple((r.replica_id, r.node_id, r.phase, r.restarts, r.n_gpu_layers, _steady(r), r.error)
                  for r in replicas),
        )  # fmt: skip
        progress = {r.replica_id: _share(r) for r in replicas if _downloading(r)}
        unchanged = self._signature.get(key) == signature and key in self._written
        if unchanged and not self._progress_due(key, progress):
            return None  # nothing, or only download progress, and not enough of it yet to write again
        self._signature[key] = signature
        self._progress[key] = (time.monotonic(), progress)
        core = (
            model_conditions(spec, replicas, state.pending_reasons, split_plan, state.target_replicas(spec))
            if spec
            else ()
        )
        if spec is not None:
            self._replica_events(key, replicas)
            self._scale_event(key, scaling)
            placed = next(c for c in core if c.type == "Placed")
            if placed.status == "False" and pending:
                self._event(key, "Warning", "FailedPlacement", placed.message)
        known = self._written.get(key, obj.get("status"))
        status = build_status({**obj, "status": known}, admission, core, replicas,
                              self._recommendation(spec, replicas), now, scaling)  # fmt: skip
        if same_status(status, known):
            self._written.setdefault(key, status)
            return None
        return status

    def _progress_due(self, key: Key, progress: dict[str, float]) -> bool:
        """Whether download progress alone is worth a status write: at most every PROGRESS_S and every
        PROGRESS_STEP of a file, whichever is later (a replica that starts or ends a download changes
        its phase or message, which is written at once)."""
        if not progress:
            return False
        when, written = self._progress.get(key, (0.0, {}))
        if time.monotonic() - when < PROGRESS_S:
            return False
        return any(
            abs(share - written.get(replica, 0.0)) >= PROGRESS_STEP for replica, share in progress.items()
        )

    def _placement_tried(
        self, spec: ModelSpec, replicas: tuple[ReplicaRecord, ...], pending: Mapping[str, str] | None
    ) -> bool:
        """Every replica exists with this spec and is placed, or the scheduler said why it is not."""
        if len(replicas) < self._state.target_replicas(spec) or any(r.spec != spec for r in replicas):
            return False
        return all(r.node_id for r in replicas) or pending is not None

    def _scale_event(self, key: Key, scaling: ScaleStatus | None) -> None:
        """A Normal event for each autoscaler decision that changed the count (not for a new leader's
        first look, nor for External mode, whose owner records its own)."""
        before = self._scaled.get(key)
        self._scaled[key] = scaling.replicas if scaling is not None else None
        if scaling is None or before is None or before == scaling.replicas or not scaling.changed_unix:
            return
        reason = "ScaledUp" if scaling.replicas > before else "ScaledDown"
        self._event(key, "Normal", reason, f"{before} → {scaling.replicas} replica(s): {scaling.reason}")

    def _replica_events(self, key: Key, replicas: tuple[ReplicaRecord, ...]) -> None:
        for event in events.replica_events(key[0], key[1], self._seen.get(key), replicas):
            self._send_event(key, event)
        self._seen[key] = events.snapshot(replicas)

    def _recommendation(
        self, spec: ModelSpec | None, replicas: tuple[ReplicaRecord, ...]
    ) -> dict[str, Any] | None:
        """The memory fit on the node the model runs on, computed when its placement changes.

        Not re-evaluated as the node's free memory moves (that would rewrite every status all the
        time), and not searched over every node while the model is pending: the Placed condition
        already gives each node's reason (`llamafleet models --cpu-mode` shows the best node's fit).
        """
        placed_on = next((r.node_id for r in replicas if r.node_id), None)
        if spec is None or placed_on is None:
            return None
        node = self._state.nodes.get(placed_on)
        # What the answer depends on: the file, the context asked for, the node (not the model's name).
        key = (
            spec.source,
            context_params(spec),
            placed_on,
            tuple(sorted(node.cached_models)) if node else (),
        )
        if key not in self._recommendations:
            if len(self._recommendations) > 10_000:
                self._recommendations.clear()
            rec, _error = model_recommendation(spec, list(self._state.nodes.values()), placed_on)
            self._recommendations[key] = rec.to_dict() if rec else None
        return self._recommendations[key]

    # --- events -------------------------------------------------------------------------
    def _event(self, key: Key, kind: str, reason: str, message: str) -> None:
        self._send_event(key, events.ModelEvent(key[0], key[1], kind, reason, message))

    def _send_event(self, key: Key, event: events.ModelEvent) -> None:
        if self._dedupe.fresh(event):
            (log.warning if event.type == "Warning" else log.info)(
                "Model %s/%s: %s: %s", key[0], key[1], event.reason, event.message
            )
            self._enqueue(_Write("event", key, event=event))

    # --- writers ------------------------------------------------------------------------
    def _enqueue(self, write: _Write) -> None:
        self._queue.put_nowait((_PRIORITY[write.kind], next(self._sequence), write))

    async def _writer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                return
            _, _, write = getter.result()
            try:
                await self._perform(write)
            except KubeError as exc:
                level = logging.DEBUG if exc.status in (404, 409) else logging.WARNING
                log.log(
                    level,
                    "Model %s/%s: %s write failed (%s); retrying on the next pass",
                    write.key[0],
                    write.key[1],
                    write.kind,
                    exc.message,
                )
                self._signature.pop(write.key, None)
                self._changed.set()

    async def _perform(self, write: _Write) -> None:
        namespace, name = write.key
        if write.kind == "status":
            self._queued_status.discard(write.key)
            status = self._wanted.pop(write.key, None)
            if status is None:
                return
            self._written[write.key] = status  # counted as written while in flight: no duplicate write
            try:
                await self._kube.patch_model(namespace, name, {"status": status}, status=True)
            except KubeError:
                if self._written.get(write.key) is status:
                    del self._written[write.key]
                raise
        elif write.kind == "finalizer":
            try:
                await self._kube.patch_model(namespace, name, write.patch or [])
            except KubeError:
                self._finalizing.pop(write.key, None)
                raise
        elif write.event is not None:
            obj = self.objects().get(write.key, {"metadata": {"name": name, "namespace": namespace}})
            body = events.event_body(write.event, obj, self._settings.identity, _stamp())
            await self._kube.create_event(namespace, body)
