"""A forward HTTP proxy for tests, as corporate networks run one: CONNECT tunnels (for https URLs) and
absolute-URI requests (for http ones), each logged, with Basic proxy authentication when asked.

What it does not do: caching, keep-alive to origins, chunked request bodies, HTTP/2.
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class ProxyLog:
    requests: list[str] = field(default_factory=list)  # "CONNECT host:port", "GET http://…"
    credentials: list[str] = field(default_factory=list)  # user:password as sent
    lock: threading.Lock = field(default_factory=threading.Lock)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    while True:
        ready, _, _ = select.select(sockets, [], [], 30)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


@contextmanager
def http_proxy(user: str = "", password: str = "") -> Iterator[tuple[str, ProxyLog]]:
    """(its URL for HTTPS_PROXY / HTTP_PROXY, with the credentials if any; what it saw)."""
    log = ProxyLog()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                head += chunk
            raw, rest = head.split(b"\r\n\r\n", 1)
            lines = raw.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
            }
            with log.lock:
                log.requests.append(f"{method} {target}")
                if "proxy-authorization" in headers:
                    log.credentials.append(
                        base64.b64decode(headers["proxy-authorization"].split()[1]).decode()
                    )
            if (
                user
                and headers.get("proxy-authorization", "")
                != "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            ):
                self.connection.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
                )
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                _pipe(self.connection, upstream)
                upstream.close()
                return
            parts = urlsplit(target)
            upstream = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=30)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [line for line in lines[1:] if not line.lower().startswith(("proxy-", "connection:"))]
            request = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
            upstream.sendall(request.encode("latin-1") + rest)
            _pipe(self.connection, upstream)
            upstream.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    auth = f"{user}:{password}@" if user else ""
    try:
        yield f"http://{auth}127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
