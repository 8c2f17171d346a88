"""What crosses the wire between llamafleet's processes, written once and used by both sides.

Each contract is a plain type here plus its one protobuf conversion (``*_pb.py``); the control plane
and the node agent import both, and nothing else restates them (docs/ARCHITECTURE.md, "Contracts").
"""
