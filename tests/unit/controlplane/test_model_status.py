"""What the operator writes into a Model's status and Events, from the cluster state (pure functions)."""

from __future__ import annotations

from controlplane.domain import Condition, ModelSpec, ReplicaPhase, ReplicaRecord, WorkerPart
from controlplane.operator.events import replica_events, snapshot
from controlplane.operator.status import Admission, build_status, same_status
from controlplane.state.views import model_conditions

SPEC = ModelSpec(name="smol", source="builtin:smollm2-135m", replicas=2)
OBJ = {"metadata": {"name": "smol", "namespace": "default", "generation": 3}}


def replica(rid: str, node: str | None, phase: ReplicaPhase, **kw: object) -> ReplicaRecord:
    return ReplicaRecord(rid, "smol", SPEC, node_id=node, phase=phase, n_gpu_layers=0, **kw)  # type: ignore[arg-type]


def conditions(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined,index]


def status_of(replicas: tuple[ReplicaRecord, ...], obj: dict[str, object], now: str) -> dict[str, object]:
    core = model_conditions(SPEC, replicas, {"smol": {"node-b": "not enough RAM"}})
    return build_status(obj, Admission("smol", SPEC), core, replicas, None, now)


def test_a_progressing_model_then_a_ready_one() -> None:
    replicas = (
        replica("smol-1", "node-a", ReplicaPhase.READY),
        replica("smol-2", None, ReplicaPhase.PENDING),
    )
    first = status_of(replicas, OBJ, "2026-11-27T10:00:00Z")
    c = conditions(first)
    assert first["observedGeneration"] == 3
    assert (first["readyReplicas"], first["replicas"], first["nodes"]) == (1, 2, "node-a")
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "NoCapacity")
    assert "node-b: not enough RAM" in str(c["Placed"]["message"])
    assert (c["Ready"]["status"], c["Progressing"]["status"], c["Degraded"]["status"]) == (
        "False",
        "True",
        "False",
    )
    assert all(x["observedGeneration"] == 3 for x in c.values())

    ready = (replicas[0], replica("smol-2", "node-a", ReplicaPhase.READY))
    second = status_of(ready, {**OBJ, "status": first}, "2026-11-27T10:05:00Z")
    c2 = conditions(second)
    assert c2["Ready"]["status"] == "True"
    assert c2["Ready"]["lastTransitionTime"] == "2026-11-27T10:05:00Z"  # it changed
    assert c2["Degraded"]["lastTransitionTime"] == "2026-11-27T10:00:00Z"  # it did not
    assert not same_status(first, second)
    again = status_of(ready, {**OBJ, "status": second}, "2026-11-27T10:09:00Z")
    assert same_status(second, again)  # nothing changed: nothing to write, whatever the clock says


def test_a_rejected_model_says_why_in_every_condition() -> None:
    status = build_status(OBJ, Admission("smol", None, "NameConflict", "already served by team-a/smol"), (),
                          (), None, "2026-11-27T10:00:00Z")  # fmt: skip
    c = conditions(status)
    assert (c["ModelValid"]["status"], c["ModelValid"]["reason"]) == ("False", "NameConflict")
    assert c["Ready"]["status"] == "False"
    assert "team-a/smol" in str(c["Ready"]["message"])


def test_events_tell_placements_readiness_restarts_failures_and_adoption() -> None:
    before = snapshot((replica("smol-1", None, ReplicaPhase.PENDING),))
    now = (
        replica("smol-1", "node-a", ReplicaPhase.READY, restarts=0),
        replica("smol-9", "node-b", ReplicaPhase.READY, adopted=True),
    )
    reasons = [e.reason for e in replica_events("default", "smol", before, now)]
    assert reasons == ["Placed", "ReplicaReady", "Adopted"]
    later = (
        replica("smol-1", "node-a", ReplicaPhase.FAILED, restarts=2, message="engine exited"),
        now[1],
    )
    events = replica_events("default", "smol", snapshot(now), later)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "EngineRestarted"),
        ("Warning", "ReplicaFailed"),
    ]
    assert replica_events("default", "smol", snapshot(later), later) == []


def test_condition_order_is_stable() -> None:
    core = (Condition("Placed", "True", "Placed"), Condition("ModelValid", "True", "Loaded"),
            Condition("Ready", "True", "AllReplicasReady"))  # fmt: skip
    status = build_status(OBJ, Admission("smol", SPEC), core, (), None, "2026-11-27T10:00:00Z")
    assert [c["type"] for c in status["conditions"]] == [
        "ModelValid",
        "Placed",
        "Ready",
        "Progressing",
        "Degraded",
        "Updated",
    ]


def test_a_split_replica_shows_its_layout_and_says_why_it_was_placed_again() -> None:
    parts = [WorkerPart("smol-1-rpc0-ab12", "node-b", 0, 19, 60 << 20, ReplicaPhase.READY, "10.0.0.3:50052")]
    split = replica("smol-1", "node-a", ReplicaPhase.READY, parts=parts, head_layers=(20, 29),
                    reserved_host_bytes=140 << 20)  # fmt: skip
    status = status_of((split,), OBJ, "2026-11-27T10:00:00Z")
    (placed,) = status["replicaStatuses"]  # type: ignore[misc]
    assert placed["layout"] == [
        {"node": "node-b", "role": "rpc-worker", "firstLayer": 0, "lastLayer": 19,
         "predictedHostBytes": 60 << 20, "phase": "ready", "endpoint": "10.0.0.3:50052"},
        {"node": "node-a", "role": "head", "firstLayer": 20, "lastLayer": 29,
         "predictedHostBytes": 140 << 20, "phase": "ready", "endpoint": ""},
    ]  # fmt: skip
    assert status["nodes"] == "node-a,node-b"
    (event,) = [e for e in replica_events("default", "smol", {}, (split,)) if e.reason == "Placed"]
    assert (
        "layers 0-19 on node-b (RPC workers), layers 20-29 and the output on node-a (head)" in event.message
    )
    again = replica("smol-1", "node-a", ReplicaPhase.STARTING, replacements=1, parts=parts,
                    head_layers=(20, 29),
                    last_failure="RPC worker on node-b: RPC worker exited (killed by SIGKILL)")  # fmt: skip
    (placed,) = status_of((again,), OBJ, "2026-11-27T10:00:00Z")["replicaStatuses"]  # type: ignore[misc]
    assert (
        placed["message"] == "split placed again: RPC worker on node-b: RPC worker exited (killed by SIGKILL)"
    )
    (restarted,) = replica_events("default", "smol", snapshot((split,)), (again,))
    assert restarted.reason == "SplitPlacedAgain"
    assert "killed by SIGKILL" in restarted.message
    assert placed["replacements"] == 1


def test_a_downloading_replica_shows_its_bytes_total_and_rate_and_a_failed_source_its_reason() -> None:
    replicas = (
        replica("smol-1", "node-a", ReplicaPhase.STARTING, download=(100 << 20, 400 << 20, 50.5 * (1 << 20)),
                message="downloading 25% (100.0 MiB of 400.0 MiB, 50.5 MiB/s)"),
        replica("smol-2", "node-b", ReplicaPhase.FAILED, error="checksum_mismatch",
                message="http://x/m.gguf: sha256 abc is not the expected def; nothing was loaded"),
    )  # fmt: skip
    status = status_of(replicas, OBJ, "2026-11-27T10:00:00Z")
    downloading, failed = status["replicaStatuses"]  # type: ignore[misc]
    assert downloading["download"] == {
        "bytes": 100 << 20,
        "totalBytes": 400 << 20,
        "bytesPerSecond": 52953088,
    }
    assert failed["download"] is None
    valid = conditions(status)["ModelValid"]
    assert (valid["status"], valid["reason"]) == ("False", "ChecksumMismatch")
