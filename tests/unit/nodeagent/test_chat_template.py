"""Chat templates get today's date as llama.cpp gives it, and a template that breaks is a 400."""

from __future__ import annotations

import datetime

import pytest

from llamafleet.core.errors import InvalidRequest
from nodeagent.engine.chat import ChatTemplate

HELLO = [{"role": "user", "content": "What is today?"}]


def test_templates_that_print_the_date_get_todays() -> None:
    # Llama 3.x templates print date_string (else "26 Jul 2024"); FireFunction prints datetime.
    template = "{{ date_string | default('26 Jul 2024') }}|{{ datetime }}"
    today = datetime.datetime.now(datetime.UTC)
    rendered = ChatTemplate(template, "<s>", "</s>").render_payload(HELLO)
    assert rendered.split("|")[0] == today.strftime("%d %b %Y")
    assert rendered.split("|")[1].startswith(today.strftime("%b %d %Y"))


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{ raise_exception('roles must alternate') }}", "refused these messages: roles must alternate"),
        ("{{ 'a' + 1 }}", "failed on them (TypeError"),
    ],
)
def test_a_template_that_refuses_or_breaks_is_a_400_on_messages(template: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says.replace("(", r"\(")) as caught:
        ChatTemplate(template, "<s>", "</s>").render_payload(HELLO)
    assert caught.value.param == "messages"
