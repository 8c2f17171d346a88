"""Pre-pull: fetch the models the control plane names for this node into its cache, one at a time,
before any replica needs them (models with ``prefetch: true`` whose nodeSelector admits the node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from llamafleet.core.errors import LlamafleetError
from llamafleet.core.logs import shown_url
from nodeagent.cache.store import ModelStore

log = logging.getLogger(__name__)

RETRY_S = 60.0


class Prefetcher:
    def __init__(
        self,
        store: ModelStore,
        wanted: Callable[[], Iterable[str]],
        changed: asyncio.Event,
        sha256_of: Callable[[str], str] = lambda _source: "",
    ) -> None:
        self._store = store
        self._wanted = wanted
        self._sha256_of = sha256_of  # what the source's Model declares: checked, and lets plain http in
        self._changed = changed  # set when the list may have changed (a WatchModels arrived)
        self._failed: dict[str, float] = {}  # source → when it last failed (tried again after RETRY_S)
        self.fetched: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for source in list(self._wanted()):
                if stop.is_set():
                    return
                if source in self.fetched or time.monotonic() - self._failed.get(source, -RETRY_S) < RETRY_S:
                    continue
                try:
                    await self._store.fetch(source, self._sha256_of(source))
                    self.fetched.add(source)
                    log.info("prefetched %s into this node's model cache", shown_url(source))
                except LlamafleetError as exc:
                    self._failed[source] = time.monotonic()
                    log.warning(
                        "cannot prefetch %s: %s; trying again in %.0fs",
                        shown_url(source),
                        exc.message,
                        RETRY_S,
                    )
            self._changed.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=RETRY_S / 4, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
