"""The models this node holds, each with its memory profile and this node's fit verdict.

A GGUF header is read once per file version (path, size, mtime); a file whose header is corrupt
or impossible is reported with the error instead of a profile, logged once, and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from llamafleet.core.errors import LlamafleetError
from llamafleet.fit.components import ContextParams
from llamafleet.fit.profile import ModelProfile
from llamafleet.fit.recommend import NodeResources, recommend
from nodeagent.cache.resolver import installed_builtins, resolve
from nodeagent.domain import CachedModel
from nodeagent.gguf.model_facts import read_model_facts

log = logging.getLogger(__name__)

DEFAULT_FIT_CONTEXT = 4096


class ModelCatalog:
    """``locate``: where this node holds a source now, without fetching (the model store's view)."""

    def __init__(self, locate: Callable[[str], Path | None] | None = None) -> None:
        self._locate = locate or _resolve_local
        self._profiles: dict[tuple[str, int, int], tuple[ModelProfile | None, str]] = {}

    def _profile(self, path: Path) -> tuple[ModelProfile | None, str]:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._profiles:
            try:
                self._profiles[key] = (read_model_facts(path).profile(), "")
            except LlamafleetError as exc:
                log.warning("cannot estimate memory for %s: %s", path, exc.message)
                self._profiles[key] = (None, exc.message)
        return self._profiles[key]

    def describe(self, source: str, path: Path, node: NodeResources) -> CachedModel:
        profile, error = self._profile(path)
        fit = None
        if profile is not None:
            context = min(DEFAULT_FIT_CONTEXT, profile.context_length or DEFAULT_FIT_CONTEXT)
            fit = recommend(profile, ContextParams(n_ctx_per_seq=context), node)
        return CachedModel(source, str(path), path.stat().st_size, profile, error, fit)

    def cached_models(self, sources: Iterable[str], node: NodeResources) -> list[CachedModel]:
        """The builtin models installed here plus every resolvable source in ``sources``."""
        found = dict(installed_builtins())
        for source in sources:
            if source not in found:
                try:
                    path = self._locate(source)
                except LlamafleetError:
                    path = None
                if path is not None:
                    found[source] = path  # a source not on this node: its replica reports that itself
        out = []
        for source, path in sorted(found.items()):
            try:
                out.append(self.describe(source, path, node))
            except OSError as exc:  # deleted or unreadable since it was resolved
                log.warning("model %s at %s: %s", source, path, exc)
        return out


def _resolve_local(source: str) -> Path | None:
    try:
        return resolve(source)
    except LlamafleetError:
        return None
