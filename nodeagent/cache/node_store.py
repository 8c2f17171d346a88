"""The node's ModelStore as the agent's settings describe it: where, how big, which credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from llamafleet.units.sizes import parse_size
from nodeagent.cache.http_fetch import prefix_matches
from nodeagent.cache.store import ModelStore
from nodeagent.settings import SupervisorSettings

log = logging.getLogger(__name__)


def headers_from(path: Path | None) -> Callable[[str], dict[str, str]]:
    """Headers for a download URL from a YAML file of URL prefix → headers (the longest prefix wins),
    read for every download so a rotated Secret takes effect; nothing of it is ever logged."""

    def headers_for(url: str) -> dict[str, str]:
        if path is None:
            return {}
        try:
            table = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            log.warning(
                "download headers file %s unreadable (%s); downloading without", path, type(exc).__name__
            )
            return {}
        matches = [prefix for prefix in table if isinstance(prefix, str) and prefix_matches(prefix, url)]
        if not matches:
            return {}
        chosen = table[max(matches, key=len)]
        return {str(k): str(v) for k, v in chosen.items()} if isinstance(chosen, dict) else {}

    return headers_for


def node_store(settings: SupervisorSettings, in_use: Callable[[], Iterable[str]]) -> ModelStore:
    token = None
    if settings.hf_token_file is not None:
        try:
            token = settings.hf_token_file.read_text().strip() or None
        except OSError as exc:
            raise OSError(
                f"cannot read --supervisor-hf-token-file {settings.hf_token_file}: {exc.strerror}"
            ) from None
    return ModelStore(
        settings.model_cache_dir(), parse_size(settings.cache_max), in_use,
        headers_from(settings.download_headers_file), hf_token=token,
        download_max=parse_size(settings.download_max), allow_plain_http=settings.allow_plain_http,
    )  # fmt: skip
