"""What a Model's status should say, from the cluster state: pure functions, no I/O.

Conditions (each with a CamelCase reason and a message people can act on):
- ModelValid: the spec is acceptable and the file loads (InvalidSpec, NameConflict, ModelNotFound,
  ModelInvalid, Loaded, NotLoadedYet);
- Placed: every replica has a node (Placed; NoCapacity or SplitPlanned with the per-node reasons);
- Ready: all desired replicas serve (AllReplicasReady; Progressing; ReplicaFailed);
- Progressing: replicas are being created, started or rolled out (True: ReplicasStarting,
  RollingUpdate) or done (False, Complete);
- Degraded: a replica failed or is restarting (True) or not (False, AsExpected);
- Updated: every replica runs the current spec (True, UpToDate) or a rollout is on (False, RollingUpdate).
``lastTransitionTime`` moves only when a condition's status changes, as Kubernetes expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controlplane.domain import Condition, ModelSpec, ReplicaPhase, ReplicaRecord, ScaleStatus
from controlplane.operator import resource

Obj = dict[str, Any]


@dataclass(frozen=True)
class Admission:
    """How the operator took one Model object: the spec it serves, or why it serves nothing."""

    model_id: str
    spec: ModelSpec | None
    reason: str = ""  # InvalidSpec, NameConflict
    message: str = ""


def _conditions(
    admission: Admission, core: tuple[Condition, ...], replicas: tuple[ReplicaRecord, ...]
) -> list[Condition]:
    if admission.spec is None:
        not_served = f"not served: {admission.message}"
        return [
            Condition("ModelValid", "False", admission.reason, admission.message),
            Condition("Placed", "False", admission.reason, not_served),
            Condition("Ready", "False", admission.reason, not_served),
            Condition("Progressing", "False", admission.reason, not_served),
            Condition("Degraded", "True", admission.reason, not_served),
            Condition("Updated", "Unknown", admission.reason, not_served),
        ]
    by_type = {c.type: c for c in core}
    ready = by_type["Ready"]
    failing = [r for r in replicas if r.phase in (ReplicaPhase.FAILED, ReplicaPhase.RESTARTING)]
    if failing:
        worst = failing[0]
        reason = "ReplicaFailed" if worst.phase == ReplicaPhase.FAILED else "EngineRestarting"
        degraded = Condition(
            "Degraded", "True", reason, f"{worst.replica_id}: {worst.message or worst.error}"
        )
    else:
        degraded = Condition("Degraded", "False", "AsExpected")
    updated = by_type.get("Updated", Condition("Updated", "True", "UpToDate"))
    if updated.status == "False":
        progressing = Condition("Progressing", "True", "RollingUpdate", updated.message)
    elif ready.status == "True":
        progressing = Condition("Progressing", "False", "Complete", ready.message)
    else:
        progressing = Condition("Progressing", "True", "ReplicasStarting", ready.message)
    return [by_type["ModelValid"], by_type["Placed"], ready, progressing, degraded, updated]


def build_status(
    obj: Obj,
    admission: Admission,
    core: tuple[Condition, ...],
    replicas: tuple[ReplicaRecord, ...],
    recommendation: dict[str, Any] | None,
    now: str,
    scaling: ScaleStatus | None = None,
) -> Obj:
    """The complete status object for ``obj`` (camelCase, as written to the status subresource)."""
    generation = int(obj["metadata"].get("generation", 1))
    previous = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    conditions = []
    for c in _conditions(admission, core, replicas):
        before = previous.get(c.type)
        changed = before is None or before.get("status") != c.status
        conditions.append(
            resource.ConditionStatus(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                last_transition_time=now if changed or before is None else before["lastTransitionTime"],
                observed_generation=generation,
            )
        )
    placed = sorted((r for r in replicas), key=lambda r: r.replica_id)
    status = resource.ModelResourceStatus(
        observed_generation=generation,
        model_id=admission.model_id,
        replicas=len(replicas),
        ready_replicas=sum(1 for r in replicas if r.phase == ReplicaPhase.READY),
        selector=f"{resource.MODEL_LABEL}={admission.model_id}",
        nodes=",".join(
            sorted({n for r in replicas if r.node_id for n in (r.node_id, *(p.node_id for p in r.parts))})
        ),
        gpu_layers=",".join(str(r.n_gpu_layers) for r in placed if r.node_id),
        conditions=conditions,
        replica_statuses=[
            resource.ReplicaPlacement(
                name=r.replica_id,
                node=r.node_id or "",
                phase=r.phase.value,
                gpu_layers=r.n_gpu_layers if r.node_id else 0,
                threads=r.threads,
                predicted_host_bytes=r.reserved_host_bytes,
                restarts=r.restarts,
                replacements=r.replacements,
                message=r.message or (f"split placed again: {r.last_failure}" if r.last_failure else ""),
                download=_download(r),
                layout=_layout(r),
            )
            for r in placed
        ],
        recommendation=recommendation,
        autoscaling=_autoscaling(scaling),
    )
    return status.model_dump(by_alias=True, mode="json")


def _autoscaling(scaling: ScaleStatus | None) -> resource.AutoscalingStatus | None:
    if scaling is None:
        return None
    changed = (
        datetime.fromtimestamp(scaling.changed_unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if scaling.changed_unix
        else ""
    )
    return resource.AutoscalingStatus(
        desired_replicas=scaling.replicas, reason=scaling.reason, last_scale_time=changed
    )


def restored_scaling(obj: Obj) -> ScaleStatus | None:
    """The autoscaler's last count as a previous leader wrote it in ``obj``'s status, if any."""
    written = (obj.get("status") or {}).get("autoscaling") or {}
    if "desiredReplicas" not in written:
        return None
    changed = 0.0
    if written.get("lastScaleTime"):
        changed = (
            datetime.strptime(written["lastScaleTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        )
    reason = f"carried on from the last leader ({written.get('reason', '')})"
    return ScaleStatus(int(written["desiredReplicas"]), reason, changed_unix=changed)


def _download(r: ReplicaRecord) -> resource.DownloadStatus | None:
    done, total, rate = r.download
    return (
        resource.DownloadStatus(bytes=done, total_bytes=total, bytes_per_second=int(rate)) if done else None
    )


def _worker_nodes(r: ReplicaRecord) -> list[str]:
    return [p.node_id for p in r.parts]


def _layout(r: ReplicaRecord) -> list[resource.SplitPartStatus]:
    if not r.parts or r.head_layers is None or r.node_id is None:
        return []
    workers = [
        resource.SplitPartStatus(
            node=p.node_id, role="rpc-worker", first_layer=p.first_layer, last_layer=p.last_layer,
            predicted_host_bytes=p.reserved_bytes, phase=p.phase.value, endpoint=p.endpoint,
        )
        for p in r.parts
    ]  # fmt: skip
    head = resource.SplitPartStatus(
        node=r.node_id, role="head", first_layer=r.head_layers[0], last_layer=r.head_layers[1],
        predicted_host_bytes=r.reserved_host_bytes, phase=r.phase.value,
    )  # fmt: skip
    return [*workers, head]


def same_status(a: Obj | None, b: Obj | None) -> bool:
    """Equal for writing purposes (a status read back from the API server may lack empty fields)."""
    if a == b:
        return True

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items() if v not in (None, "", [], {}, 0)}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return value

    return bool(norm(a or {}) == norm(b or {}))
