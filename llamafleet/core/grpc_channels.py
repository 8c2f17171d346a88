"""gRPC channel options every llamafleet client uses, so a control-plane failover is noticed in seconds.

By default gRPC shares one subchannel per address across every channel of a process and backs
off reconnecting it up to 120 s: a new channel to a control plane that just came back (a new
leader behind the same Service) would fail from the cached state until that timer ran out. A
local subchannel pool gives every channel its own fresh attempt, and the backoff stays short.

Keepalive pings both ways: a node whose link is cut sends no FIN, so without them its stream would
look alive for TCP's retransmission timeout (many minutes) and its replicas would keep their
routes. With them the control plane sees a lost agent (and an agent or a gateway a lost control
plane) within about ten seconds.
"""

from __future__ import annotations

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.so_reuseport", 0),  # a second control plane on a busy port must fail, not share it
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),  # accept the clients' pings
    ("grpc.http2.max_ping_strikes", 0),
]
