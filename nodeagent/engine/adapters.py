"""LoRA adapters loaded at runtime on top of the base model: registry, reference counts, context binding.

llama.cpp applies adapters per context, so the batcher binds one adapter set per decode step
(``bind``). Requests hold a reference to the adapters they use; unloading one that is in use
hides it from new requests at once and frees its memory when the last user finishes.
Native calls (load, free, bind) happen on the batcher thread; lookups may come from any
thread, hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafleet.core.errors import Forbidden, InvalidRequest, ModelFileInvalid, ModelNotFound
from nodeagent.engine.native import NativeModel
from nodeagent.engine.sequence import AdapterKey

log = logging.getLogger(__name__)


@dataclass
class LoadedAdapter:
    name: str
    path: Path
    scale: float
    handle: Any
    load_seconds: float
    users: int = 0
    unloading: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "scale": self.scale,
            "load_seconds": round(self.load_seconds, 4),
            "in_use": self.users,
        }


class AdapterRegistry:
    def __init__(self, model: NativeModel) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._adapters: dict[str, LoadedAdapter] = {}
        self._bound: AdapterKey = ()

    # --- any thread --------------------------------------------------------------------------

    def listed(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.view() for a in self._adapters.values() if not a.unloading]

    def acquire(self, wanted: list[tuple[str, float | None]]) -> AdapterKey:
        """Resolve (name, scale or default) pairs to a key and take a reference on each adapter."""
        with self._lock:
            key: dict[str, float] = {}
            for name, scale in wanted:
                adapter = self._adapters.get(name)
                if adapter is None or adapter.unloading:
                    # Not the list of loaded ones: a caller may not be allowed to see the others.
                    raise ModelNotFound(f"adapter {name!r} is not loaded")
                key[name] = adapter.scale if scale is None else scale
            for name in key:
                self._adapters[name].users += 1
            return tuple(sorted(key.items()))

    # --- batcher thread ----------------------------------------------------------------------

    def load(self, name: str, path: Path, scale: float) -> dict[str, Any]:
        with self._lock:
            existing = self._adapters.get(name)
            if existing is not None and not existing.unloading:
                raise InvalidRequest(f"an adapter named {name!r} is already loaded; unload it first", "name")
            if existing is not None:
                # Its references are counted by name: a second one under it would take them over.
                raise InvalidRequest(
                    f"adapter {name!r} is still unloading ({existing.users} request(s) running); "
                    "try again when they finish, or load it under another name",
                    "name",
                )
        if not path.is_file():
            raise InvalidRequest(f"adapter file {path} does not exist on this node", "path")
        started = time.perf_counter()
        try:
            handle = self._model.load_adapter(path)
        except ModelFileInvalid as exc:
            raise InvalidRequest(exc.message, "path") from exc
        adapter = LoadedAdapter(name, path, scale, handle, time.perf_counter() - started)
        with self._lock:
            self._adapters[name] = adapter
        log.info("loaded LoRA adapter %s from %s in %.3fs", name, path, adapter.load_seconds)
        return adapter.view()

    def unload(self, name: str) -> None:
        with self._lock:
            adapter = self._adapters.get(name)
            if adapter is None or adapter.unloading:
                raise ModelNotFound(f"adapter {name!r} is not loaded")
            adapter.unloading = True
            free_now = adapter.users == 0
        if free_now:
            self._free(adapter)
        else:
            log.info("adapter %s unloads when its %d running request(s) finish", name, adapter.users)

    def release(self, key: AdapterKey) -> None:
        to_free = []
        with self._lock:
            for name, _ in key:
                adapter = self._adapters[name]
                adapter.users -= 1
                if adapter.unloading and adapter.users == 0:
                    to_free.append(adapter)
        for adapter in to_free:
            self._free(adapter)

    def bind(self, key: AdapterKey) -> None:
        """Make the context apply exactly this adapter set from the next decode on."""
        if key == self._bound:
            return
        with self._lock:
            handles = [self._adapters[name].handle for name, _ in key]
        self._model.set_adapters(handles, [scale for _, scale in key])
        self._bound = key

    def _free(self, adapter: LoadedAdapter) -> None:
        if any(name == adapter.name for name, _ in self._bound):
            self.bind(())  # never leave the context pointing at freed memory
        self._model.free_adapter(adapter.handle)
        with self._lock:
            self._adapters.pop(adapter.name, None)
        log.info("unloaded LoRA adapter %s", adapter.name)

    def close(self) -> None:
        with self._lock:
            adapters = list(self._adapters.values())
        for adapter in adapters:
            self._free(adapter)


def confined(requested: str, allowed: list[Path]) -> Path:
    """The adapter file a runtime load may open: inside one of ``allowed`` once every symlink is
    resolved, no ``..`` anywhere; a relative path is taken inside the first folder. No folders
    (an engine run by hand): any path."""
    if "\0" in requested:
        raise InvalidRequest("an adapter path may not contain a NUL character", "path")
    path = Path(requested)
    if not allowed:
        return path
    if ".." in path.parts:
        raise Forbidden("adapter paths may not contain '..'")
    if not path.is_absolute():
        path = allowed[0] / path
    real = path.resolve()
    if not any(real.is_relative_to(folder.resolve()) for folder in allowed):
        folders = ", ".join(str(f) for f in allowed)
        raise Forbidden(f"adapter path {requested!r} is outside this node's adapter folders ({folders})")
    return real
