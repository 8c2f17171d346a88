"""Who may talk to whom: the cluster's certificates (pki.py), TLS for every gRPC channel with the peer's
identity (grpc_tls.py), and the per-replica secret the engines require (engine_auth.py)."""
