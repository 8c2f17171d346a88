"""A bound on a request's line and headers, which uvicorn's default parser (httptools) lacks: a
client could send megabytes of headers and the server would keep them all. Beyond
``MAX_HEADER_BYTES`` the connection gets 431 in OpenAI's error envelope and is closed."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llamafleet.core.errors import error_body

MAX_HEADER_BYTES = 64 * 1024  # request line + headers; nginx's default allows 32 KiB, h11's 16 KiB

_BODY = json.dumps(
    error_body(
        f"request line and headers exceed {MAX_HEADER_BYTES} bytes",
        "invalid_request_error",
        "headers_too_large",
    )
).encode()
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _BODY
)


class _TooLarge(Exception):
    pass


class BoundedHttpTools(HttpToolsProtocol):
    _head_bytes = 0
    _too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            raise _TooLarge  # the parser stops and reports an error: answered below, not with 400

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        self.transport.write(_RESPONSE)
        self.transport.close()
