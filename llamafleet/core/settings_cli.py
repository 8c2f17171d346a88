"""Builds argparse options from pydantic settings models, so `--help`, env vars and defaults share one source.

Every leaf field of a settings model becomes a flag whose help text is the field's description,
with its default and the environment variable that sets it. Only flags given on the command
line override; everything else comes from the environment, then the defaults.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

ENV_PREFIX = "LLAMAFLEET_"
ENV_NESTED_DELIMITER = "__"

S = TypeVar("S", bound=BaseSettings)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_list(annotation: object) -> bool:
    return typing.get_origin(annotation) in (list, tuple)


def _is_bool(annotation: object) -> bool:
    return annotation is bool


def _metavar(annotation: object) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next((a for a in args if a is not type(None)), annotation)
    if annotation is Path:
        return "PATH"
    if annotation in (int, float):
        return "N"
    return "VALUE"


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    flag_prefix: str = "",
    dest_prefix: str = "",
    skip: frozenset[str] = frozenset(),
    prefix_groups: bool = False,
) -> None:
    """Add one flag per leaf field of ``model``; nested models become argument groups.

    Fields of a top-level group are flagged without the group's name (``--port``) unless
    ``prefix_groups`` (``--gateway-port``), which commands combining several groups need.
    """
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        annotation = field.annotation
        dest = f"{dest_prefix}{name}"
        if _is_model(annotation):
            assert isinstance(annotation, type)
            container = parser
            if isinstance(parser, argparse.ArgumentParser):
                container = parser.add_argument_group(f"{name} options", (annotation.__doc__ or "").strip())
            add_settings_arguments(
                container,
                annotation,
                flag_prefix=f"{flag_prefix}{name}-" if (prefix_groups or dest_prefix) else "",
                dest_prefix=f"{dest}{ENV_NESTED_DELIMITER}",
            )
            continue
        flag = "--" + f"{flag_prefix}{name}".replace("_", "-")
        env = ENV_PREFIX + dest.upper()
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or ''} (default: {default!r}; env {env})"
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if _is_bool(annotation):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif _is_list(annotation):
            kwargs["action"] = "append"
            kwargs["metavar"] = "VALUE"
            kwargs["help"] = help_text + "; repeat the flag for several"
        else:
            kwargs["metavar"] = _metavar(annotation)
        parser.add_argument(flag, **kwargs)


def settings_from_args(model: type[S], namespace: argparse.Namespace) -> S:
    """Instantiate ``model`` with the flags that were given; env vars and defaults fill the rest."""
    overrides: dict[str, Any] = {}
    for dest, value in vars(namespace).items():
        if dest.startswith("_") or dest == "command":
            continue
        parts = dest.split(ENV_NESTED_DELIMITER)
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    known = {k: v for k, v in overrides.items() if k in model.model_fields}
    try:
        return model(**known)
    except ValidationError as exc:  # one line per problem, no traceback: the process cannot start
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + (f" (got {e['input']!r})" if not isinstance(e["input"], dict) else "")
            for e in exc.errors()
        )
        raise SystemExit(f"invalid settings: {problems}") from None
