"""The models file: valid specs parse with CRD-style names; every mistake names the model and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.desired.model_file import load_models
from llamafleet.core.errors import InvalidRequest


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_parses_camel_case_fields(tmp_path: Path) -> None:
    (spec,) = load_models(
        write(
            tmp_path,
            "models:\n  - {name: m1, source: builtin:smollm2-135m, contextLength: 4096, parallelSlots: 2}\n",
        )
    )
    assert (spec.name, spec.context_length, spec.parallel_slots, spec.replicas, spec.gpu_layers) == (
        "m1", 4096, 2, 1, "auto",
    )  # fmt: skip


def test_templates_with_loop_controls_and_generation_blocks_are_accepted(tmp_path: Path) -> None:
    template = (
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% break %}{% endfor %}"
    )
    (spec,) = load_models(
        write(tmp_path, f"models:\n  - name: m1\n    source: x\n    chatTemplate: '{template}'\n")
    )
    assert spec.chat_template == template


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  - {name: m1, source: x, contextLength: ten}\n", "model m1: contextLength"),
        ("models:\n  - {name: m1, source: x, bogus: 1}\n", "model m1: bogus"),
        ("models:\n  - {name: Bad_Name, source: x}\n", "model Bad_Name: name"),
        ("models:\n  - {name: m1, source: x}\n  - {name: m1, source: y}\n", "duplicate model names: m1"),
        ("models: [unclosed\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
        (
            "models:\n  - {name: m1, source: x, chatTemplate: '{% for m in messages %}'}\n",
            "model m1: chatTemplate.*not a valid Jinja template: Unexpected end of template",
        ),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        load_models(write(tmp_path, text))
