"""The replica contract to and from protobuf: the one conversion both sides use. The messages mirror
the types field for field (same names), so a round trip is the identity."""

from __future__ import annotations

import dataclasses

from llamafleet.contract.replica import AdapterSpec, RemotePart, ReplicaSpec, Role, RpcLease
from protos.gen.llamafleet.agent.v1 import agent_pb2 as pb

_ROLES = {Role.ENGINE: pb.REPLICA_ROLE_ENGINE, Role.RPC_WORKER: pb.REPLICA_ROLE_RPC_WORKER}
_FROM_PB = {value: role for role, value in _ROLES.items()}
# Fields with presence (proto3 `optional`): unset, the type's default applies, not the message's 0.
OPTIONAL_FIELDS = ("cache_ram",)


def to_pb(spec: ReplicaSpec) -> pb.ReplicaSpec:
    scalars = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
               if f.name not in ("adapters", "remote_parts", "role", "lease")}  # fmt: skip
    return pb.ReplicaSpec(
        **scalars,
        adapters=[pb.AdapterSpec(**dataclasses.asdict(a)) for a in spec.adapters],
        remote_parts=[pb.RemotePart(**dataclasses.asdict(p)) for p in spec.remote_parts],
        role=_ROLES[spec.role],
        lease=pb.RpcLease(**dataclasses.asdict(spec.lease)) if spec.lease else None,
    )


def from_pb(message: pb.ReplicaSpec) -> ReplicaSpec:
    scalars = {f.name: getattr(message, f.name) for f in dataclasses.fields(ReplicaSpec)
               if f.name not in ("adapters", "remote_parts", "role", "lease")
               and (f.name not in OPTIONAL_FIELDS or message.HasField(f.name))}  # fmt: skip
    return ReplicaSpec(
        **scalars,
        adapters=tuple(AdapterSpec(a.name, a.path, a.scale) for a in message.adapters),
        remote_parts=tuple(
            RemotePart(p.node_id, p.endpoint, p.first_layer, p.last_layer) for p in message.remote_parts
        ),
        role=_FROM_PB.get(message.role, Role.ENGINE),
        lease=RpcLease(**{f.name: getattr(message.lease, f.name) for f in dataclasses.fields(RpcLease)})
        if message.HasField("lease")
        else None,
    )
