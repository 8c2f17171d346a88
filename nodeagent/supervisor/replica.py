"""One model replica's engine process: resolve and validate the model, start it, probe /health.

A split head (``spec.remote_parts``) also gets, for its whole life, one mutual-TLS tunnel per
remote part (``nodeagent.rpc.tunnel``) when the node has credentials; its engine then reaches each
RPC worker through a loopback port, and only the leased worker's gate answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from llamafleet.contract.replica import engine_arguments
from llamafleet.core.errors import (
    ChecksumMismatch,
    DiskFull,
    InvalidRequest,
    ModelFileInvalid,
    ModelNotFound,
    SourceDenied,
    Unavailable,
)
from llamafleet.core.threads import THREADS_PATH
from llamafleet.security.engine_auth import ENGINE_SECRET_ENV, engine_headers
from llamafleet.units.sizes import format_size
from nodeagent.cache.store import DownloadProgress, ModelStore
from nodeagent.domain import Phase, ReplicaError
from nodeagent.gguf.header import GGUFHeader, read_header
from nodeagent.rpc.tunnel import HeadTunnel
from nodeagent.supervisor.process import Launch, SupervisedProcess, free_port, listening_socket

log = logging.getLogger(__name__)


class EngineReplica(SupervisedProcess):
    kind = "engine"
    drains = True

    _header: GGUFHeader
    _parts: list[str]  # --rpc-parts as the engine gets them (through the tunnels when there are any)
    _draft_path: Path | None = None  # speculative "draft": the draft model's file on this node

    @property
    def gpu_mode(self) -> bool:
        if not self._node_has_gpu or self.spec.remote_parts:
            return False
        layers = self.spec.n_gpu_layers
        header = getattr(self, "_header", None)
        return layers < 0 or (header is not None and layers > header.block_count)  # the output layer too

    async def prepare(self) -> bool:
        """Fetch (through the node's cache) and check the model file; a missing, refused, corrupt or
        unfitting one is a permanent failure for this Assign, a broken download is resumed."""
        # What the engine requires on every request; the gateway gets it through the routing table.
        self._update(secret=secrets.token_urlsafe(32))
        try:
            path = await self._fetch(self.spec.source, self.spec.sha256)
            if path is None:
                return False  # stopped while downloading
            if self.spec.draft_source:  # speculative "draft": the engine loads both
                self._draft_path = await self._fetch(self.spec.draft_source, self.spec.draft_sha256)
                if self._draft_path is None:
                    return False
                await asyncio.to_thread(read_header, self._draft_path)  # a broken file fails here, named
            self._header = await asyncio.to_thread(read_header, path)
            self._on_change()  # its layer count is known: whether it runs on the GPU alone
            return True
        except (ModelNotFound, InvalidRequest) as exc:
            self._fail(ReplicaError.MODEL_NOT_FOUND, exc.message)
        except SourceDenied as exc:
            self._fail(ReplicaError.SOURCE_DENIED, exc.message)
        except ChecksumMismatch as exc:
            self._fail(ReplicaError.CHECKSUM_MISMATCH, exc.message)
        except ModelFileInvalid as exc:
            self._fail(ReplicaError.MODEL_INVALID, exc.message)
        except DiskFull as exc:
            self._fail(ReplicaError.DISK_FULL, exc.message)
        return False

    async def _fetch(self, source: str, sha256: str) -> Path | None:
        """A model file (the model's or its draft's), downloading it if this node lacks it: progress in
        the replica's message, an interrupted download resumed until it completes or the replica stops."""
        store = self._store or ModelStore(self._settings.model_cache_dir())
        while True:
            fetching = asyncio.ensure_future(store.fetch(source, sha256))
            while not fetching.done():
                stopped = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait({fetching, stopped}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if self.stop.is_set() and not fetching.done():
                    fetching.cancel()  # our wait only: the download itself goes on for other replicas
                    return None
                progress = store.progress(source)
                if progress is not None:
                    self._update(message=f"downloading {_progress_text(progress)}",
                                 download=(progress.done, progress.total, progress.rate))  # fmt: skip
            try:
                path = fetching.result()
                self._update(download=(0, 0, 0.0), message="")
                return path
            except Unavailable as exc:
                self._update(message=f"download interrupted ({exc.message}); resuming in 30s")
                log.warning("replica %s: %s; resuming in 30s", self.spec.replica_id, exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 30)
                if self.stop.is_set():
                    return None

    @contextlib.asynccontextmanager
    async def alongside(self) -> AsyncIterator[None]:
        parts = self.spec.remote_parts
        credentials = self._credentials
        self._parts = [f"{p.endpoint}={p.first_layer}-{p.last_layer}" for p in parts]
        if not parts or credentials is None:
            yield  # whole, or a split whose workers check the head's address (docs/SPLIT.md)
            return
        stop = asyncio.Event()
        tasks = []
        self._parts = []
        for part in parts:
            host, port = part.endpoint.rsplit(":", 1)
            local = free_port("127.0.0.1")
            tunnel = HeadTunnel(credentials, (host, int(port)), worker_node=part.node_id)
            up = asyncio.Event()
            tasks.append(asyncio.create_task(tunnel.serve(local, stop, up)))
            await up.wait()
            self._parts.append(f"127.0.0.1:{local}={part.first_layer}-{part.last_layer}")
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def precheck(self) -> str:
        """A split head: every worker's gate must answer, or llama.cpp would abort the engine at load."""
        credentials = self._credentials
        context = credentials.context(ssl.Purpose.SERVER_AUTH) if credentials else None
        for part in self.spec.remote_parts:
            host, port = part.endpoint.rsplit(":", 1)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=context), 5)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                return f"cannot reach the RPC worker on node {part.node_id} at {part.endpoint}: {reason}"
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return ""

    def launch(self) -> Launch:
        host = self._settings.engine_bind_host
        listening = listening_socket(host, self._settings.engine_port_range())
        port = int(listening.getsockname()[1])
        threads = self.threads
        self._update(threads=threads)
        split = [f for part in self._parts for f in ("--rpc-parts", part)]
        if split:
            split += ["--decode-timeout-s", str(self._settings.rpc_decode_timeout_s)]
        argv = [
            sys.executable, "-m", "nodeagent.engine",
            "--model-path", str(self._header.path), "--model-name", self.spec.model,
            "--host", host, "--port", str(port), "--listen-fd", str(listening.fileno()),
            *engine_arguments(dataclasses.replace(self.spec, n_threads=threads)),  # this node's share
            "--parent-pid", str(os.getpid()),
            "--shutdown-grace-s", str(max(1.0, self._settings.stop_grace_s - 2)),
            *(["--chat-template-file", str(self._chat_template_file())] if self.spec.chat_template else []),
            *(["--draft-model-path", str(self._draft_path)] if self._draft_path else []),
            *(f for a in self.spec.adapters for f in ("--adapters", f"{a.name}={a.path}@{a.scale}")),
            *(f for d in self._settings.allowed_adapter_dirs() for f in ("--adapter-dirs", str(d))),
            *split,
        ]  # fmt: skip
        return Launch(argv, f"http://{self._settings.advertise_host}:{port}", f"http://{host}:{port}",
                      env={ENGINE_SECRET_ENV: self._state.secret}, listening=listening)  # fmt: skip

    def _chat_template_file(self) -> Path:
        """The model's chat template, written where the engine reads it (too long for a command line)."""
        path = self._settings.data_dir / "templates" / f"{self.spec.replica_id}.jinja"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.spec.chat_template)
        return path

    _prompt_cache_held = 0  # bytes its prompt cache held at the last health probe

    def memory_to_come(self) -> int:
        """The part of its prompt cache's cap (--cache-ram) not filled yet, once it serves. Before that
        the control plane holds the replica's whole need, the cap included (scheduler.framework)."""
        if self._state.phase != Phase.READY:
            return 0
        return max(0, (self.spec.cache_ram << 20) - self._prompt_cache_held)

    async def healthy(self, client: httpx.AsyncClient, probe: str, pid: int) -> bool:
        health = await _health(client, probe)
        if health is None:
            return False
        self._prompt_cache_held = int(health.get("prompt_cache_bytes", 0))
        adapters = tuple(health.get("adapters", ()))  # reported upstream when it changes
        if adapters != self._state.adapters:
            self._update(adapters=adapters)
        threads = int(health.get("threads", 0))
        if threads and threads != self.threads:  # the node's CPUs were shared again
            threads = await self._set_threads(client, probe) or threads
        if threads and threads != self._state.threads:
            self._update(threads=threads)
        return True

    async def _set_threads(self, client: httpx.AsyncClient, url: str) -> int:
        """Move the running engine to its share (no restart: llama.cpp takes it at its next decode)."""
        try:
            response = await client.put(
                f"{url}{THREADS_PATH}",
                json={"threads": self.threads},
                headers=engine_headers(self._state.secret),
            )
            response.raise_for_status()
            threads = int(response.json()["threads"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("replica %s: could not move its engine to %d threads: %s", self.spec.replica_id,
                        self.threads, exc)  # fmt: skip
            return 0
        log.info("replica %s: engine now computes with %d thread(s)", self.spec.replica_id, threads)
        return threads


async def _health(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    """The engine's /health body when it is ready, else None."""
    try:
        response = await client.get(f"{url}/health")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body
    except (httpx.HTTPError, ValueError):
        return None


def _progress_text(progress: DownloadProgress) -> str:
    done = format_size(progress.done)
    if not progress.total:
        return f"{done} at {format_size(progress.rate)}/s"
    share = 100 * progress.done / progress.total
    return f"{share:.0f}% ({done} of {format_size(progress.total)}, {format_size(progress.rate)}/s)"
