"""A real HTTP file server for download tests (there is no internet here), with injected faults,
and a Hugging Face hub emulation on the same port.

- ``GET /files/NAME``: the file, with Range (206 + Content-Range; 416 beyond the end) and
  keep-alive, as a CDN serves it.
- Faults per file, consumed in order: ``drop_after=N`` (the connection is cut after N bytes of
  one answer), ``status=S`` (one answer with that status), ``ignore_range`` (one 200 answer to a
  Range request), ``short`` (one answer that announces the full length and sends less), and
  ``delay_s`` (a pause before every answer).
- Hugging Face (point ``HF_ENDPOINT`` at ``url``): ``GET /api/models/ORG/REPO/tree/REV`` lists a
  registered repository's files the way the hub does (type, oid, size, path, lfs {oid = sha256,
  size, pointerSize}); ``GET /ORG/REPO/resolve/REV/FILE`` redirects (302) to the file, as the hub
  redirects LFS files to its CDN; an unknown repository answers 404 with the hub's
  ``X-Error-Code: RepoNotFound``, a gated one 401 with ``GatedRepo``.

What it does not do: pagination of trees (one page), ``expand`` metadata, xet storage, ETags and
``HEAD`` metadata calls (``hf_hub_download`` is not used: the node cache downloads itself),
authentication beyond "a token is present" for gated repositories.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support.ports import server_port


@dataclass
class Fault:
    drop_after: int | None = None
    status: int | None = None
    ignore_range: bool = False
    short: bool = False
    redirect_to: str | None = None  # answer 302 to this URL (another host, as the hub's CDN is)
    unsized: bool = False  # no Content-Length (chunked): the size is known only at the end


@dataclass
class FileServer:
    url: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=lambda: defaultdict(list))
    delay_s: float = 0.0
    pace_s: float = 0.0  # a pause after every 1 MiB of body (a slow link)
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # body bytes per file
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[str, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))  # headers
    repos: dict[str, dict[str, str]] = field(default_factory=dict)  # repo → {path in repo: file name}
    gated: set[str] = field(default_factory=set)
    listed: dict[str, Path] = field(default_factory=dict)  # file name → what the tree lists (tampering)

    def add(self, name: str, path: Path) -> str:
        self.files[name] = path
        return f"{self.url}/files/{name}"

    def add_repo(self, repo: str, files: dict[str, Path]) -> None:
        self.repos[repo] = {}
        for in_repo, path in files.items():
            name = f"{repo.replace('/', '--')}--{in_repo.replace('/', '--')}"
            self.files[name] = path
            self.repos[repo][in_repo] = name

    # --- handlers -------------------------------------------------------------------------------
    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests[name] += 1
        self.seen[name].append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        path = self.files.get(name)
        fault = self.faults[name].pop(0) if self.faults.get(name) else Fault()
        if fault.status is not None:
            return web.Response(status=fault.status, text=f"injected {fault.status}")
        if fault.redirect_to is not None:
            raise web.HTTPFound(fault.redirect_to)
        if path is None:
            return web.Response(status=404, text="no such file")
        size = path.stat().st_size
        start, status = 0, 200
        header = request.headers.get("Range", "")
        if header.startswith("bytes=") and not fault.ignore_range:
            start = int(header[6:].split("-")[0])
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
        response = web.StreamResponse(status=status)
        if not fault.unsized:
            response.content_length = size - start
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        response.headers["Accept-Ranges"] = "bytes"
        await response.prepare(request)
        limit = size - start
        if fault.drop_after is not None:
            limit = min(limit, fault.drop_after)
        if fault.short:
            limit = limit // 2
        with path.open("rb") as f:
            f.seek(start)
            left = limit
            while left > 0:
                block = f.read(min(1 << 20, left))
                if not block:
                    break
                await response.write(block)
                self.sent[name] += len(block)
                left -= len(block)
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)
        if limit < size - start:  # cut the connection mid-body, as a dropped link does
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _tree(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        refused = self._refused(request, repo)
        if refused is not None:
            return refused
        listing = []
        for in_repo, name in sorted(self.repos[repo].items()):
            data = self.listed.get(name, self.files[name]).read_bytes()
            lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            oid = hashlib.sha1(data).hexdigest()
            listing.append({"type": "file", "oid": oid, "size": len(data), "path": in_repo, "lfs": lfs})
        return web.json_response(listing)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        refused = self._refused(request, repo)
        if refused is not None:
            return refused
        name = self.repos[repo].get(request.match_info["file"])
        if name is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"}, text="no such file")
        raise web.HTTPFound(f"/files/{name}")

    def _refused(self, request: web.Request, repo: str) -> web.Response | None:
        if repo not in self.repos:
            return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound"},
                                text='{"error":"Repository not found"}')  # fmt: skip
        if repo in self.gated and not request.headers.get("Authorization"):
            return web.Response(status=401, headers={"X-Error-Code": "GatedRepo"},
                                text='{"error":"Access to this repository is restricted"}')  # fmt: skip
        return None


@contextmanager
def file_server(tls: Path | None = None) -> Iterator[FileServer]:
    """``tls``: a folder with ``tls.crt`` and ``tls.key`` (llamafleet.security.pki.init_pki's, for 127.0.0.1):
    serve https (the client must trust its CA, e.g. SSL_CERT_FILE)."""
    server = FileServer()
    app = web.Application()
    app.router.add_get("/files/{name}", server._file)
    app.router.add_get("/api/models/{org}/{repo}/tree/{revision}", server._tree)
    app.router.add_get("/{org}/{repo}/resolve/{revision}/{file:.+}", server._resolve)
    port = server_port()
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls / "tls.crt", tls / "tls.key")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def main() -> None:
    """`python -m tests.support.file_server PORT NAME=PATH…`: serve files in a process of their own
    (a benchmark's client then has the interpreter to itself)."""
    import sys

    server = FileServer(url=f"http://127.0.0.1:{sys.argv[1]}")
    for item in sys.argv[2:]:
        name, path = item.split("=", 1)
        server.files[name] = Path(path)
    app = web.Application()
    app.router.add_get("/files/{name}", server._file)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
