"""What a request looks like to the balancer: its prefix keys and its session key, read from the body.

The prefix key identifies the part of the prompt an engine may already hold in a slot's KV
cache: for a chat, its leading messages up to and including the first user message, whole (a
conversation keeps this as it grows turn by turn, while different conversations under one
system prompt differ — a truncated key would make every conversation under a long system
prompt one "prefix"); for a completion, the first ``prefix_chars`` characters of the prompt.
The shared key is what conversations have in common: a chat's messages before its first user
message (the system prompt); without any, the first ``prefix_chars`` characters of a first user
message longer than that (instructions or a document pasted ahead of the question: clients of
models without a system role, Gemma's among them, and benchmark tools that send a conversation as
one message); "" otherwise. An engine copies it between slots, so new conversations prefer the
replica that last served it.
The session key is the OpenAI ``user`` field, or the ``X-Session-ID`` header when given.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SESSION_HEADER = "x-session-id"


@dataclass(frozen=True)
class RequestKeys:
    prefix: str = ""  # hex digest; "" when the body has no prompt to speak of
    session: str = ""
    shared: str = ""  # hex digest of a chat's messages before the first user message; "" if none


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def request_keys(body: bytes, headers: dict[str, str], prefix_chars: int = 1024) -> RequestKeys:
    try:
        data = json.loads(body)
    except ValueError:
        return RequestKeys()
    if not isinstance(data, dict):
        return RequestKeys()
    session = headers.get(SESSION_HEADER) or str(data.get("user") or "")
    prefix = shared = ""
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        leading: list[str] = []
        for message in messages:
            role = message.get("role", "") if isinstance(message, dict) else ""
            if role == "user" and leading:
                shared = _digest("\x1e".join(leading))
            leading.append(f"{role}\x1f{_content(message)}")
            if role == "user":
                break
        prefix = _digest("\x1e".join(leading))
        if not shared and len(leading) == 1 and len(lead := _content(messages[0])) > prefix_chars:
            shared = _digest(f"user\x1f{lead[:prefix_chars]}")
    elif isinstance(data.get("prompt"), str) and data["prompt"]:
        prefix = _digest(data["prompt"][:prefix_chars])
    return RequestKeys(prefix, session, shared)
