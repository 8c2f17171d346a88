"""Which model a request names: aliases (``gpt-4o-mini=qwen2.5-7b``) and a default model for
requests that name none, as configured on the gateway (--model-aliases, --default-model).

The body goes to the engine with the served model's name (an alias may name ``base:adapter``),
so the answer's ``model`` is the model that served it. Routing, key scopes and metrics see the
served name too.
"""

from __future__ import annotations

import json

from llamafleet.core.errors import InvalidRequest


class ModelNames:
    def __init__(self, aliases: list[str], default: str) -> None:
        self._aliases: dict[str, str] = {}
        for entry in aliases:
            alias, sep, model = entry.partition("=")
            if not sep or not alias.strip() or not model.strip():
                raise ValueError(f"--model-aliases: {entry!r} is not ALIAS=MODEL")
            self._aliases[alias.strip()] = model.strip()
        self._default = default

    def resolve(self, asked: str) -> str:
        """The served model (or base:adapter) a request's ``model`` field means."""
        if not asked:
            if not self._default:
                raise InvalidRequest('give "model" (this gateway has no default model)', "model")
            asked = self._default
        return self._aliases.get(asked, asked)

    def aliases_of(self, served: str) -> list[str]:
        """The aliases configured for ``served`` (what /v1/models lists beside it)."""
        return sorted(alias for alias, model in self._aliases.items() if model == served)

    def rewrite(self, raw: bytes, asked: str, served: str) -> bytes:
        """The body with ``model`` set to the served model, when it differs from what was asked."""
        if asked == served:
            return raw
        body = json.loads(raw)
        body["model"] = served
        return json.dumps(body, separators=(",", ":")).encode()
