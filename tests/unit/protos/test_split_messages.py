"""A split's Assign messages survive the one replica conversion both sides use: the control plane's
Assign, the agent's reading of it, and back (the agent reports the spec it runs)."""

from __future__ import annotations

from controlplane.agents import convert as controlplane_side
from llamafleet.contract import replica_pb
from llamafleet.contract.replica import RemotePart, ReplicaSpec, Role, RpcLease
from nodeagent.uplink import convert as agent_side


def test_a_worker_lease_and_a_heads_remote_parts_round_trip() -> None:
    worker = ReplicaSpec("r1-rpc0-ab12", "big", "/m/big.gguf", "", 512, 1, -1, 1, role=Role.RPC_WORKER,
                         lease=RpcLease("node-a", "10.0.0.2", "r1", 0, 13))  # fmt: skip
    head = ReplicaSpec("r1", "big", "/m/big.gguf", "", 512, 1, -1, 1, remote_parts=(
        RemotePart("node-b", "10.0.0.3:50052", 0, 13), RemotePart("node-c", "10.0.0.4:50053", 14, 25),
    ))  # fmt: skip
    for sent in (worker, head):
        received = agent_side.replica_spec(controlplane_side.assign(7, sent).assign.replica)
        assert received.role == (Role.RPC_WORKER if sent.lease else Role.ENGINE)
        assert received == sent
        assert replica_pb.from_pb(replica_pb.to_pb(received)) == sent
