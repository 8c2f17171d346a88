"""The inference endpoints, written once: every dialect's table of POST routes that carry a model.

The gateway registers each with its generic forwarder (controlplane/gateway/routers/inference.py),
the engine each dialect's handlers (nodeagent/engine/routes/); tests/unit/contract/test_endpoints.py
checks both serve exactly these.
"""

from __future__ import annotations

from llamafleet.protocol import messages, native, openai, rerank, responses
from llamafleet.protocol.endpoint import Endpoint

DIALECTS = {
    "openai": openai.ENDPOINTS,
    "native": native.ENDPOINTS,
    "rerank": rerank.ENDPOINTS,
    "responses": responses.ENDPOINTS,
    "messages": messages.ENDPOINTS,
}

INFERENCE: tuple[Endpoint, ...] = tuple(e for table in DIALECTS.values() for e in table)

BY_PATH = {e.path: e for e in INFERENCE}

# Streams whose usage comes in a chunk of its own, only when stream_options.include_usage asks for it
# (the Responses and Messages streams always carry theirs; llama-server's /completion too).
USAGE_CHUNK_PATHS = frozenset(e.path for e in INFERENCE if e.usage_chunk)
