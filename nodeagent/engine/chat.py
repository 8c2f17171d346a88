"""Chat messages → prompt text, with the model's own Jinja chat template from the GGUF.

The template is rendered in a sandbox (llama-cpp-python's Jinja2ChatFormatter, which follows
Transformers' rendering); the model's BOS/EOS strings are passed in as the templates expect.
A GGUF without a template falls back to ChatML, and says so in the log.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llamafleet.core.errors import InvalidRequest
from llamafleet.core.openai_api import ChatMessage

log = logging.getLogger(__name__)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


class ChatTemplate:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        if not template:
            log.warning("the GGUF has no chat template; using ChatML")
        self._formatter = Jinja2ChatFormatter(template or CHATML, eos_token=eos_token, bos_token=bos_token)

    def render(self, messages: list[ChatMessage]) -> str:
        payload: list[Any] = [
            m.model_dump(exclude_none=True, exclude={"content"}) | {"content": m.text()} for m in messages
        ]
        return self.render_payload(payload)

    def render_payload(self, payload: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """Messages already shaped for the template (nodeagent/engine/tools.py), with the tools it renders."""
        now = datetime.datetime.now(datetime.UTC)
        # Today's date as llama.cpp gives it to the templates that print it (Llama 3.x's date_string,
        # FireFunction's datetime); templates that do not name them ignore them.
        dates = {"date_string": now.strftime("%d %b %Y"), "datetime": now.strftime("%b %d %Y %H:%M:%S GMT")}
        try:
            return str(self._formatter(messages=payload, tools=tools, **dates).prompt)  # type: ignore[arg-type]
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
