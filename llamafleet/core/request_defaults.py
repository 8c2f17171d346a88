"""Per-model request defaults, as Ollama's Modelfile parameters: sampling settings and a default
``max_tokens`` applied when a request sets none.

Precedence, field by field: the request; the model's ``requestDefaults`` (models file, Model
resource); the GGUF's own ``general.sampling.*`` keys (the model author's recommendation, as
llama.cpp reads them); llama-server's defaults (nodeagent/engine/sampling.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# GGUF metadata key → RequestDefaults field (the keys llama.cpp's common sampling reads).
GGUF_SAMPLING_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repeat_penalty",
    "general.sampling.penalty_last_n": "repeat_last_n",
}


class RequestDefaults(BaseModel):
    """Applied where a request sets none: the request wins, then these, then the GGUF's own
    general.sampling.* keys, then llama-server's defaults."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, description="When a request gives no max_tokens")
    seed: int | None = Field(
        default=None, ge=0, description="Sampling seed when a request gives none: repeatable answers (evals)"
    )

    def as_json(self) -> str:
        """Compact JSON of the fields set (snake_case), '' when none: what engines are started with."""
        values = self.model_dump(exclude_none=True)
        return json.dumps(values, sort_keys=True, separators=(",", ":")) if values else ""

    def over(self, base: RequestDefaults) -> RequestDefaults:
        """These, with ``base`` filling the fields these leave unset."""
        return base.model_copy(update=self.model_dump(exclude_none=True))

    @classmethod
    def from_gguf(cls, meta: Callable[[str], str | None]) -> RequestDefaults:
        """The GGUF's general.sampling.* keys; a value out of range is skipped, not fatal."""
        values: dict[str, Any] = {}
        for key, name in GGUF_SAMPLING_KEYS.items():
            raw = meta(key)
            if raw is None:
                continue
            try:
                number = float(raw)
                values[name] = int(number) if name in ("top_k", "repeat_last_n") else number
                cls.model_validate(values)
            except ValueError:
                values.pop(name, None)
        return cls.model_validate(values)
