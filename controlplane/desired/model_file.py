"""Desired models from a YAML file (`--models FILE`), re-read when it changes.

A broken file never stops the control plane: the error is logged and reported, and the last
good set of models stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from controlplane.domain import ModelSpec
from controlplane.state.cluster import ClusterState
from llamafleet.core.errors import InvalidRequest

log = logging.getLogger(__name__)


def load_models(path: Path) -> list[ModelSpec]:
    """Parse ``path``: ``models: [ {name, source, replicas, contextLength, …} ]``. Raises InvalidRequest."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read ({exc.strerror})", "models") from exc
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{path}: not valid YAML ({exc})", "models") from exc
    if document is None:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("models", []), list):
        raise InvalidRequest(f"{path}: expected a mapping with a 'models' list", "models")
    specs: list[ModelSpec] = []
    for index, item in enumerate(document.get("models") or []):
        try:
            specs.append(ModelSpec.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            name = item.get("name", f"#{index}") if isinstance(item, dict) else f"#{index}"
            raise InvalidRequest(
                f"{path}: model {name}: {where}: {first['msg']}", f"models[{index}].{where}"
            ) from exc
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequest(f"{path}: duplicate model names: {', '.join(duplicates)}", "models")
    return specs


class ModelFileSource:
    def __init__(self, path: Path, state: ClusterState, poll_s: float = 2.0) -> None:
        self._path = path
        self._state = state
        self._poll_s = poll_s
        self._stamp: tuple[float, int] | None = None

    def load_now(self) -> None:
        try:
            stat = self._path.stat()
            self._stamp = (stat.st_mtime, stat.st_size)
            specs = load_models(self._path)
        except InvalidRequest as exc:
            log.error("%s; keeping the previous models", exc.message)
            self._state.set_models(self._state.models.values(), error=exc.message)
            return
        except OSError as exc:
            log.error("%s: %s; keeping the previous models", self._path, exc.strerror)
            return
        log.info("models file %s: %s", self._path, ", ".join(s.name for s in specs) or "no models")
        self._state.set_models(specs)

    async def run(self, stop: asyncio.Event) -> None:
        self.load_now()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)
            try:
                stat = self._path.stat()
            except OSError:
                continue
            if (stat.st_mtime, stat.st_size) != self._stamp:
                self.load_now()
