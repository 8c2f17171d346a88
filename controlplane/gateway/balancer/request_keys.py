"""What a request looks like to the balancer: its prompt as a chain of block hashes, and its session key.

The prompt's text (a completion's prompt; a chat's messages in order, each as role and content) is
cut into blocks of ``BLOCK_CHARS`` characters, and block i is named by a hash of everything up to
its end (the hash of block i-1 and its own text): two prompts share their first k names exactly
when their first k blocks of text are equal. The last, partial block is named too, so a short or
repeated prompt has a name. The balancer remembers which replicas were sent which names
(``BalancerState.hold``) and scores a replica by how many of a prompt's leading names it holds: the
part of the prompt its engine's KV cache (or host prompt cache) already has — a system prompt, a
document pasted ahead of questions, a conversation's history as it grows turn by turn — whatever
the API and wherever the shared part ends. The request's model (with its adapter) seeds the chain:
an engine's cache is per adapter. At most ``MAX_BLOCKS`` names (32 KiB of prompt): past that,
longer matches are not told apart.

The session key is the OpenAI ``user`` field, or the ``X-Session-ID`` header when given.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SESSION_HEADER = "x-session-id"
BLOCK_CHARS = 256
MAX_BLOCKS = 128


@dataclass(frozen=True)
class RequestKeys:
    blocks: tuple[str, ...] = ()  # the prompt's block names, first block first; () with no prompt
    session: str = ""


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _prompt_text(data: dict[str, Any]) -> str:
    messages = data.get("messages")
    if isinstance(messages, list):
        return "".join(
            f"{m.get('role', '') if isinstance(m, dict) else ''}\x1f{_content(m)}\x1e" for m in messages
        )
    prompt = data.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def block_names(text: str, seed: str = "") -> tuple[str, ...]:
    """The chained hashes of ``text``'s blocks (see the module docstring)."""
    names: list[str] = []
    previous = hashlib.blake2b(seed.encode(), digest_size=12).digest()
    for start in range(0, min(len(text), BLOCK_CHARS * MAX_BLOCKS), BLOCK_CHARS):
        block = text[start : start + BLOCK_CHARS].encode()
        previous = hashlib.blake2b(previous + block, digest_size=12).digest()
        names.append(previous.hex())
    return tuple(names)


def request_keys(body: bytes, headers: dict[str, str]) -> RequestKeys:
    try:
        data = json.loads(body)
    except ValueError:
        return RequestKeys()
    if not isinstance(data, dict):
        return RequestKeys()
    session = headers.get(SESSION_HEADER) or str(data.get("user") or "")
    return RequestKeys(block_names(_prompt_text(data), str(data.get("model") or "")), session)
