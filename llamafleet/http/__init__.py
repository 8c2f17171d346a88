"""HTTP plumbing the gateway, the engine and every probe port share: domain errors as HTTP answers in
OpenAI's envelope (errors.py), bounds on bodies and headers (body_limit.py, header_limits.py), a
uvicorn server that leaves signals to its process (server.py), and /healthz, /readyz, /metrics
(probes.py)."""
