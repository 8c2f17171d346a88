"""Checks a chat template given by a user (a model's chatTemplate) before anything renders it."""

from __future__ import annotations

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def template_error(text: str) -> str:
    """Why ``text`` is not a Jinja template llama.cpp's and our renderers can load; '' when it is."""
    try:
        ImmutableSandboxedEnvironment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"not a valid Jinja template: {exc.message} (line {exc.lineno})"
    return ""
