"""Checks a chat template given by a user (a model's chatTemplate) before anything renders it.

Parsed as the engines render it (Transformers' chat-template environment, which llama-cpp-python
follows): sandboxed, loop controls on (``{% break %}``, Cohere's templates), and Hugging Face's
``{% generation %}`` blocks passed through (LFM2.5's, Laguna's).
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _GenerationBlocks(Extension):
    tags = {"generation"}  # noqa: RUF012 (jinja2 declares it per instance, reads it per class)

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def template_error(text: str) -> str:
    """Why ``text`` is not a Jinja template the engines can load; '' when it is."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _GenerationBlocks]
    )
    try:
        environment.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"not a valid Jinja template: {exc.message} (line {exc.lineno})"
    return ""
