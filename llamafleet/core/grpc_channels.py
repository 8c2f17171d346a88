"""gRPC channel options every llamafleet client uses, so a control-plane failover is noticed in seconds.

By default gRPC shares one subchannel per address across every channel of a process and backs
off reconnecting it up to 120 s: a new channel to a control plane that just came back (a new
leader behind the same Service) would fail from the cached state until that timer ran out. A
local subchannel pool gives every channel its own fresh attempt, and the backoff stays short.
"""

from __future__ import annotations

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
