"""One-off HTTP requests for tests and benchmarks, without httpx's TLS setup on every call.

``httpx.get()`` and its siblings build a client per call, and with it a TLS context that loads the
CA bundle: about 20 ms of CPU per call on these machines, plain-HTTP requests included, where the
request itself costs under 1 ms. Polled five times a second by a few waits at once, that was a large
share of a test's CPU (a third of the control-plane failover tests' own process, in their Services'
label checks). Here the context is made once; each call still opens and closes its own connection,
exactly as ``httpx.get()`` does, so nothing is kept alive across a process a test kills.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractContextManager
from typing import Any

import certifi
import httpx

# httpx's own default (certifi's bundle), built once. Calls that give their own verify= or a client
# certificate (cert=, which httpx loads into the context) get httpx's per-call context instead.
_TLS = ssl.create_default_context(cafile=certifi.where())


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    if "verify" not in kwargs and "cert" not in kwargs:
        kwargs["verify"] = _TLS
    return httpx.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs: Any) -> httpx.Response:
    return request("PUT", url, **kwargs)


def patch(url: str, **kwargs: Any) -> httpx.Response:
    return request("PATCH", url, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return request("DELETE", url, **kwargs)


def stream(method: str, url: str, **kwargs: Any) -> AbstractContextManager[httpx.Response]:
    """``httpx.stream()``: the response, its body read as it arrives, within a ``with`` block."""
    if "verify" not in kwargs and "cert" not in kwargs:
        kwargs["verify"] = _TLS
    return httpx.stream(method, url, **kwargs)
