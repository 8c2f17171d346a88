"""Chat messages → prompt text, with the model's own Jinja chat template from the GGUF.

The template is rendered in a sandbox (llama-cpp-python's Jinja2ChatFormatter, which follows
Transformers' rendering); the model's BOS/EOS strings are passed in as the templates expect.
A GGUF without a template falls back to ChatML, and says so in the log.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llamafleet.core.errors import InvalidRequest
from llamafleet.protocol.openai import ChatCompletionRequest, ChatMessage

log = logging.getLogger(__name__)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True)
class RenderOptions:
    """A request's say in how the template renders it (llama-server's and vLLM's request fields)."""

    generation_prompt: bool = True  # add_generation_prompt
    variables: dict[str, Any] = field(default_factory=dict)  # chat_template_kwargs

    @classmethod
    def of(cls, request: ChatCompletionRequest) -> RenderOptions:
        return cls(request.add_generation_prompt, dict(request.chat_template_kwargs or {}))


class ChatTemplate:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        if not template:
            log.warning("the GGUF has no chat template; using ChatML")
        source = template or CHATML
        self._formatters = {  # by add_generation_prompt
            opening: Jinja2ChatFormatter(source, eos_token, bos_token, add_generation_prompt=opening)
            for opening in (True, False)
        }

    def render(self, messages: list[ChatMessage], options: RenderOptions | None = None) -> str:
        payload: list[Any] = [
            m.model_dump(exclude_none=True, exclude={"content"}) | {"content": m.text()} for m in messages
        ]
        return self.render_payload(payload, None, options)

    def render_payload(
        self,
        payload: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        options: RenderOptions | None = None,
    ) -> str:
        """Messages already shaped for the template (nodeagent/engine/tools.py), with the tools it renders."""
        options = options or RenderOptions()
        now = datetime.datetime.now(datetime.UTC)
        # Today's date as llama.cpp gives it to the templates that print it (Llama 3.x's date_string,
        # FireFunction's datetime); templates that do not name them ignore them.
        variables = {
            "date_string": now.strftime("%d %b %Y"),
            "datetime": now.strftime("%b %d %Y %H:%M:%S GMT"),
        }
        variables |= options.variables
        formatter = self._formatters[options.generation_prompt]
        try:
            return str(formatter(messages=payload, tools=tools, **variables).prompt)  # type: ignore[arg-type]
        except (ValueError, jinja2.TemplateError) as exc:
            # Templates reject some conversations on purpose (e.g. roles that do not alternate).
            raise InvalidRequest(
                f"the model's chat template refused these messages: {exc}", "messages"
            ) from exc
        except (TypeError, KeyError, AttributeError, IndexError) as exc:  # a template that fails on them
            raise InvalidRequest(
                f"the model's chat template failed on them ({type(exc).__name__}: {exc})",
                "messages",
            ) from exc
