"""A scheduler profile: which filters run, which scorers weigh in and how much (YAML, validated at start).

    filters: [node-ready, node-selector, fits-memory, fits-cpu]
    scorers:
      - {name: model-strategy, weight: 2}   # each model's spread/binpack
      - {name: cache-locality, weight: 1}
      - {name: replica-spread, weight: 1}

Unknown plugin names, duplicate entries and non-positive weights are refused with the list of
plugins that exist, so a typo never silently changes placement.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llamafleet.core.errors import InvalidRequest

FILTERS = ("node-ready", "node-selector", "fits-memory", "fits-cpu")
SCORERS = ("model-strategy", "binpack", "spread", "cache-locality", "replica-spread")


class ScorerRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weight: float = Field(default=1.0, gt=0, le=100)

    @field_validator("name")
    @classmethod
    def known(cls, name: str) -> str:
        if name not in SCORERS:
            raise ValueError(f"unknown scorer {name!r}; scorers: {', '.join(SCORERS)}")
        return name


class SchedulerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filters: tuple[str, ...] = FILTERS
    scorers: tuple[ScorerRef, ...] = (
        ScorerRef(name="model-strategy", weight=2),
        ScorerRef(name="cache-locality", weight=1),
        ScorerRef(name="replica-spread", weight=1),
    )

    @field_validator("filters")
    @classmethod
    def known_filters(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if name not in FILTERS:
                raise ValueError(f"unknown filter {name!r}; filters: {', '.join(FILTERS)}")
        if len(set(names)) != len(names):
            raise ValueError("a filter is listed twice")
        if "node-ready" not in names:
            raise ValueError("node-ready must stay: a disconnected node can run nothing")
        return names

    @field_validator("scorers")
    @classmethod
    def unique_scorers(cls, refs: tuple[ScorerRef, ...]) -> tuple[ScorerRef, ...]:
        if len({r.name for r in refs}) != len(refs):
            raise ValueError("a scorer is listed twice")
        return refs


def load_profile(path: Path | None) -> SchedulerProfile:
    """The profile in ``path`` (the default one when None); InvalidRequest says what is wrong."""
    if path is None:
        return SchedulerProfile()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"scheduler profile {path}: {exc}") from exc
    try:
        return SchedulerProfile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"scheduler profile {path}: {problems}") from exc
