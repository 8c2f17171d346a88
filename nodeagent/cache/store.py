"""The node's model cache: one copy of each file per node, fetched once, verified, evicted LRU.

    DATA_DIR/models/blobs/sha256-<hex>          the files, named by their content
    DATA_DIR/models/sources/<id>/<file name>    per source, links to its blobs under their own names
                                                (llama.cpp finds a split model's shards by name)
    DATA_DIR/models/partial/<id>-<file name>    downloads in progress (resumed after a restart)
    DATA_DIR/models/index.json                  blob sizes and last use, what each source resolved to

A file is downloaded to ``partial/``, hashed as it arrives, checked against the sha256 its model
declares (or the hub lists), and only then moved into ``blobs/``: a partial or corrupt file is
never loaded. Concurrent asks for one source share one download. Before a download and after it,
least recently used blobs are evicted until the cache fits ``max_bytes`` — never a blob a replica
on this node uses or is starting with (``in_use``), nor one being fetched. Local paths and builtin
models are used where they are (a sha256, when given, is checked once per file version).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llamafleet.core.errors import ChecksumMismatch, DiskFull, ModelNotFound, SourceDenied
from llamafleet.core.logs import shown_url
from llamafleet.units.sizes import format_size
from nodeagent.cache import huggingface
from nodeagent.cache.http_fetch import Fetched, Progress, fetch
from nodeagent.cache.resolver import builtin_path
from nodeagent.cache.sources import Builtin, HuggingFace, Local, Url, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadProgress:
    """One source's fetch, as its replicas report it: bytes of all its files so far, their total, rate."""

    done: int
    total: int
    rate: float


@dataclass
class _Index:
    blobs: dict[str, dict[str, float]] = field(default_factory=dict)  # hex → {size, used}
    sources: dict[str, list[list[str]]] = field(default_factory=dict)  # source → [[name, hex], …]
    verified: dict[str, str] = field(default_factory=dict)  # "path:size:mtime" → hex (local files)


def _source_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


class ModelStore:
    def __init__(
        self,
        root: Path,
        max_bytes: int = 0,
        in_use: Callable[[], Iterable[str]] = lambda: (),
        headers_for: Callable[[str], dict[str, str]] = lambda _url: {},
        hf_endpoint: str | None = None,
        hf_token: str | None = None,
        download_max: int = 0,
        allow_plain_http: bool = False,
    ) -> None:
        self.root = root
        self._allow_plain_http = allow_plain_http  # http:// sources without a sha256 (the operator's risk)
        self.max_bytes = max_bytes  # 0: no cap
        self._download_max = download_max  # 0: no cap beyond the announced size and the free room
        self._in_use = in_use
        self._headers_for = headers_for
        self._hf_endpoint = hf_endpoint or os.environ.get("HF_ENDPOINT") or None
        self._hf_token = hf_token or os.environ.get("HF_TOKEN") or None
        self._flights: dict[str, asyncio.Task[Path]] = {}
        self._progress: dict[str, DownloadProgress] = {}
        self._content_locks: dict[str, asyncio.Lock] = {}
        self._index = self._load()

    # --- what replicas and the catalog ask --------------------------------------------------
    async def fetch(self, source: str, sha256: str = "") -> Path:
        """The local file for ``source`` (a split model's first shard), fetched once per node and
        checked against ``sha256`` when given. Every model naming the source shares one download;
        each checks the result against its own sha256 (a wrong one loads nothing)."""
        parsed = parse(source)
        if isinstance(parsed, Builtin):
            return builtin_path(parsed.name)
        if isinstance(parsed, Local):
            return await self._local(parsed.path, sha256)
        flight = self._flights.get(source)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(source, parsed, sha256))
            self._flights[source] = flight
            flight.add_done_callback(lambda _t: self._flights.pop(source, None))
        path = await asyncio.shield(flight)
        got = self._index.sources[source][0][1]
        if sha256 and got != sha256:
            raise ChecksumMismatch(f"{source}: sha256 {got} is not the expected {sha256}; nothing was loaded")
        return path

    def cached(self, source: str) -> Path | None:
        """The file if this node holds it now (never fetches)."""
        parsed = parse(source)
        if isinstance(parsed, Builtin):
            return builtin_path(parsed.name)
        if isinstance(parsed, Local):
            return parsed.path if parsed.path.is_file() else None
        entry = self._index.sources.get(source)
        if not entry:
            return None
        path = self._link(source, entry[0][0])
        return path if path.exists() else None

    def progress(self, source: str) -> DownloadProgress | None:
        return self._progress.get(source)

    def used_bytes(self) -> int:
        return int(sum(b["size"] for b in self._index.blobs.values()))

    # --- fetching -------------------------------------------------------------------------------
    async def _fetch(self, source: str, parsed: Url | HuggingFace, hint: str) -> Path:
        """Download a remote source unless it is cached; its files' sha256 is recorded (the hub's
        listed one is checked: a transfer that does not match it is discarded). ``hint``: the sha256
        a model declares for a URL, to find the same content brought by another source."""
        held = self.cached(source)
        if held is not None:
            self._touch(source)
            return held
        if (
            isinstance(parsed, Url)
            and parsed.url.lower().startswith("http://")
            and not (hint or self._allow_plain_http)
        ):
            raise SourceDenied(
                f"{shown_url(source)}: plain http with no sha256 (anyone on the path could swap the file); "
                "give the Model's sha256, use https, or start the agent with --supervisor-allow-plain-http"
            )
        if isinstance(parsed, Url):
            files = [huggingface.RemoteFile(parsed.filename, parsed.url, 0, "")]
        else:
            files = await huggingface.resolve(parsed, self._hf_endpoint, self._hf_token)
        total = sum(f.size for f in files)
        self._evict(room_for=total)
        done = 0
        names: list[list[str]] = []
        for remote in files:
            key = remote.sha256 or (hint if len(files) == 1 else "")
            hf = isinstance(parsed, HuggingFace)
            hex_digest = await self._download(source, remote, done, total, hf, key)
            names.append([Path(remote.name).name, hex_digest])
            done += int(self._index.blobs[hex_digest]["size"])
        self._progress.pop(source, None)
        self._index.sources[source] = names
        for name, hex_digest in names:
            self._place_link(source, name, hex_digest)
        self._touch(source)
        self._save()
        try:
            self._evict(room_for=0, keep=source)
        except DiskFull:  # its size was not known before it came (a plain URL): it cannot stay
            self._drop(source)
            raise
        return self._link(source, names[0][0])

    async def _download(
        self,
        source: str,
        remote: huggingface.RemoteFile,
        before: int,
        total: int,
        hf: bool,
        key: str,
    ) -> str:
        """``key``: the sha256 the file is expected to have ('' when unknown): one download per key."""
        if not key:
            return await self._download_unlocked(source, remote, before, total, hf)
        # One download per content: another source naming the same file waits for it.
        async with self._content_locks.setdefault(key, asyncio.Lock()):
            if key in self._index.blobs and self._blob(key).exists():
                return key  # another source already brought this content
            return await self._download_unlocked(source, remote, before, total, hf)

    async def _download_unlocked(
        self,
        source: str,
        remote: huggingface.RemoteFile,
        before: int,
        total: int,
        hf: bool,
    ) -> str:
        part = self.root / "partial" / f"{_source_id(source)}-{Path(remote.name).name}"
        part.parent.mkdir(parents=True, exist_ok=True)

        def report(p: Progress) -> None:
            self._progress[source] = DownloadProgress(before + p.done, max(total, before + p.total), p.rate)

        log.info(
            "downloading %s (%s)",
            shown_url(remote.url),
            format_size(remote.size) if remote.size else "size unknown",
        )
        started = time.monotonic()
        headers = self._headers_for(remote.url)
        if hf and self._hf_token:  # not sent along a redirect to another host (the hub's CDN)
            headers = {**headers, "Authorization": f"Bearer {self._hf_token}"}
        limit, why = self._download_limit(remote, part)
        got: Fetched = await fetch(remote.url, part, headers, report, limit=limit, limit_why=why)
        if remote.sha256 and got.sha256 != remote.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{shown_url(remote.url)}: sha256 {got.sha256} is not the expected {remote.sha256}; "
                "nothing was kept"
            )
        blob = self._blob(got.sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        self._index.blobs[got.sha256] = {"size": got.size, "used": time.time()}
        elapsed = max(time.monotonic() - started, 1e-6)
        log.info("downloaded %s: %s in %.1fs (%s/s), sha256 %s", remote.name, format_size(got.size), elapsed,
                 format_size(int(got.fetched / elapsed)), got.sha256)  # fmt: skip
        return got.sha256

    def _download_limit(self, remote: huggingface.RemoteFile, part: Path) -> tuple[int, str]:
        """The most bytes this file may reach, and why: the smallest of the disk's free room (plus what the
        partial file already holds), its listed size and the configured maximum. (The cache's cap is
        made room for by eviction, before a download of a known size and after one of an unknown.)"""
        have = part.stat().st_size if part.exists() else 0
        limits = [(shutil.disk_usage(self.root).free + have, "no space left on this node")]
        if remote.size:
            limits.append((remote.size, "its listed size"))
        if self._download_max:
            limits.append((self._download_max, "--supervisor-download-max"))
        return min(limits)

    async def _local(self, path: Path, sha256: str) -> Path:
        info = await asyncio.to_thread(_stat, path)
        if info is None:
            raise ModelNotFound(f"model file {path} does not exist on this node")
        if not sha256:
            return path
        key = f"{path}:{info.st_size}:{info.st_mtime_ns}"
        known = self._index.verified.get(key)
        if known is None:
            known = await asyncio.to_thread(_sha256_of, path)
            self._index.verified[key] = known
            self._save()
        if known != sha256:
            raise ChecksumMismatch(f"{path}: sha256 {known} is not the expected {sha256}")
        return path

    # --- the files ------------------------------------------------------------------------------
    def _blob(self, hex_digest: str) -> Path:
        return self.root / "blobs" / f"sha256-{hex_digest}"

    def _link(self, source: str, name: str) -> Path:
        return self.root / "sources" / _source_id(source) / name

    def _place_link(self, source: str, name: str, hex_digest: str) -> None:
        link = self._link(source, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.path.relpath(self._blob(hex_digest), link.parent))

    def _touch(self, source: str) -> None:
        now = time.time()
        for _, hex_digest in self._index.sources.get(source, []):
            if hex_digest in self._index.blobs:
                self._index.blobs[hex_digest]["used"] = now

    def _evict(self, room_for: int, keep: str = "") -> None:
        """Remove least recently used blobs no replica uses until ``room_for`` more bytes fit the cap
        (``keep``: a source just fetched, not counted as evictable); DiskFull when they cannot."""
        if not self.max_bytes:
            return
        spared = [*self._in_use(), *self._flights, keep]
        keep_blobs = {h for s in spared for _, h in self._index.sources.get(s, [])}
        blobs = self._index.blobs
        candidates = sorted((b for b in blobs if b not in keep_blobs), key=lambda b: blobs[b]["used"])
        while self.used_bytes() + room_for > self.max_bytes and candidates:
            victim = candidates.pop(0)
            for source, names in list(self._index.sources.items()):
                if any(h == victim for _, h in names):
                    self._forget(source)
            self._blob(victim).unlink(missing_ok=True)
            size = self._index.blobs.pop(victim)["size"]
            log.info("evicted sha256-%s (%s) from the model cache: the least recently used one unused",
                     victim[:12], format_size(size))  # fmt: skip
        self._save()
        if self.used_bytes() + room_for > self.max_bytes:
            raise DiskFull(
                f"the model cache cannot fit {format_size(room_for)} more: {format_size(self.used_bytes())} "
                f"of its {format_size(self.max_bytes)} cap is in use by replicas on this node"
            )

    def _forget(self, source: str) -> None:
        for name, _ in self._index.sources.pop(source, []):
            self._link(source, name).unlink(missing_ok=True)

    def _drop(self, source: str) -> None:
        """Remove a source and the blobs no other source shares."""
        names = self._index.sources.get(source, [])
        self._forget(source)
        shared = {h for other in self._index.sources.values() for _, h in other}
        for _, hex_digest in names:
            if hex_digest not in shared:
                self._blob(hex_digest).unlink(missing_ok=True)
                self._index.blobs.pop(hex_digest, None)
        self._save()

    def _load(self) -> _Index:
        path = self.root / "index.json"
        try:
            data = json.loads(path.read_text())
            index = _Index(data.get("blobs", {}), data.get("sources", {}), data.get("verified", {}))
        except (OSError, ValueError):
            index = _Index()
        index.blobs = {
            h: b for h, b in index.blobs.items() if self._blob(h).exists()
        }  # lost while we were down
        return index

    def _save(self) -> None:
        path = self.root / "index.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index.__dict__))
        os.replace(tmp, path)


def _stat(path: Path) -> os.stat_result | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info if path.is_file() else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
